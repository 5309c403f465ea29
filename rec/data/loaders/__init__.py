"""Dataset loaders: every on-disk format becomes a :class:`rec.data.schema.Tenant`.

:func:`load_source` is the only entry point the rest of the package needs::

    from rec.config import TenantSource
    tenant = load_source(TenantSource(format="seqrec", path="seqrec-benchmark/amazon2014-beauty"))  # under the data root

Each format module reads its files into chronological per-user sequences plus an item catalog;
the post-processing common to all of them (minimum sequence length, user sampling, emptiness
check) happens here once. The ``synthetic`` format lives in :mod:`rec.data.synthetic` and is not
registered here. Formats and files are described in ``docs/data-formats.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from rec.config import TenantSource
from rec.data.loaders._common import select_users
from rec.data.loaders.generic import load_generic
from rec.data.loaders.hetrec import load_hetrec_lastfm
from rec.data.loaders.lcrec import load_lcrec
from rec.data.loaders.movielens import load_movielens_1m, load_movielens_1m_tsv, load_movielens_100k
from rec.data.loaders.s3rec import load_s3rec
from rec.data.loaders.sasrec import load_sasrec
from rec.data.loaders.seqrec import load_seqrec
from rec.data.loaders.unisrec import load_unisrec
from rec.data.paths import resolve_source
from rec.data.schema import DataError, Tenant, tenant_id_from, validate_tenant_id

__all__ = ["FORMATS", "default_tenant_name", "load_source"]

Loader = Callable[[TenantSource, str], Tenant]


def _generic(src: TenantSource, name: str) -> Tenant:
    return load_generic(
        Path(src.path),
        name,
        user_col=src.user_col,
        item_col=src.item_col,
        time_col=src.time_col,
        # the default column name is only a guess: a file without it is read in row order
        time_col_required="time_col" in src.model_fields_set,
        items_path=Path(src.items_path) if src.items_path else None,
        text_cols=src.text_cols,
    )


# format name -> loader(source, tenant name). Loaders take plain arguments; these adapters pick them.
FORMATS: dict[str, Loader] = {
    "movielens-100k": lambda s, n: load_movielens_100k(Path(s.path), n),
    "movielens-1m": lambda s, n: load_movielens_1m(Path(s.path), n),
    "movielens-1m-tsv": lambda s, n: load_movielens_1m_tsv(Path(s.path), n),
    "seqrec": lambda s, n: load_seqrec(Path(s.path) / (s.subset or ""), n),
    "unisrec": lambda s, n: load_unisrec(Path(s.path), n, s.subset),
    "lcrec": lambda s, n: load_lcrec(Path(s.path), n, s.subset),
    "s3rec": lambda s, n: load_s3rec(Path(s.path), n, s.subset),
    "sasrec": lambda s, n: load_sasrec(Path(s.path), n, s.subset),
    "hetrec-lastfm": lambda s, n: load_hetrec_lastfm(Path(s.path), n),
    "generic": _generic,
}


def default_tenant_name(src: TenantSource) -> str:
    """``src.name``, else a tenant id from the subset, else from the folder (or file stem).

    Raises:
        DataError: ``src.name`` is not a valid tenant id.
    """
    if src.name:
        try:
            return validate_tenant_id(src.name)
        except ValueError as e:
            raise DataError(f"data source name: {e}") from None
    if src.subset:
        return tenant_id_from(src.subset)
    p = Path(src.path)
    stem = p.name
    if p.is_file() or p.suffix:
        for ext in (".gz", ".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq"):
            stem = stem[: -len(ext)] if stem.lower().endswith(ext) else stem
    return tenant_id_from(stem or p.resolve().name)


def load_source(src: TenantSource, min_seq_len: int = 3, root: str | Path | None = None) -> Tenant:
    """Load one tenant and apply the shared post-processing.

    Steps: read with the format's loader (full catalog, chronological sequences); drop users with
    fewer than ``min_seq_len`` interactions (the catalog is kept whole: items nobody touched can
    still be recommended); keep a ``src.seed``-seeded sample of ``src.max_users`` users, in their
    original order.

    Args:
        src: The source (format, path, subset, sampling, generic column mapping).
        min_seq_len: Minimum interactions per user (3 = train + valid + test item).
        root: The data root relative paths are read from (``data.root``; None = the default, see
            ``rec.data.paths``).

    Returns:
        The tenant, named ``src.name`` or after the subset / dataset folder.

    Raises:
        DataError: Unknown format, missing/malformed files, or no user left after filtering.
    """
    if src.format not in FORMATS:
        hint = ""
        if src.format == "synthetic":
            hint = " (synthetic data is built by rec.data.synthetic, not loaded from files)"
        raise DataError(f"no file loader for format {src.format!r}{hint}; loaders exist for: {', '.join(FORMATS)}")
    if not src.path:
        raise DataError(f"format {src.format!r}: path is empty; set it to the dataset folder (a file for generic)")
    src = resolve_source(src, root)
    name = default_tenant_name(src)
    try:
        tenant = FORMATS[src.format](src, name)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        raise DataError(f"format {src.format!r}: cannot read {e.filename}: {e.strerror}") from None
    lengths = tenant.lengths()
    keep = np.flatnonzero(lengths >= min_seq_len)
    if len(keep) == 0:
        raise DataError(
            f"tenant {name!r} ({src.format} at {src.path}): no user has at least min_seq_len={min_seq_len} "
            f"interactions (longest sequence: {int(lengths.max(initial=0))}); lower data.min_seq_len or check the data"
        )
    if src.max_users is not None and len(keep) > src.max_users:
        rng = np.random.default_rng(src.seed)
        keep = np.sort(rng.choice(keep, size=src.max_users, replace=False))
    if len(keep) < tenant.num_users:
        tenant = select_users(tenant, keep)
    return tenant
