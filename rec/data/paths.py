"""Where datasets live: one data root, and source paths relative to it.

The rule, everywhere (CLI, benchmarks, tests, configs): a relative ``TenantSource.path`` (and
``items_path``) is read from the data root; an absolute one is used as it is. The data root is
``data.root`` in the config, else the ``REC_DATA_ROOT`` environment variable (read by the entry
points, never by the library, and passed in as ``env_value``), else ``../shared/datasets`` beside
the repository.
"""

from __future__ import annotations

from pathlib import Path

from rec.config import DATA_ROOT_ENV, TenantSource
from rec.data.schema import DataError

__all__ = ["DEFAULT_DATA_ROOT", "data_root", "resolve_source"]

#: ``../shared/datasets`` beside the repository (this file is ``<repo>/rec/data/paths.py``)
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def data_root(configured: str | Path | None = None, env_value: str | None = None) -> Path:
    """The data root: ``configured`` (``data.root``), else ``env_value`` (``$REC_DATA_ROOT``), else the default.

    Raises:
        DataError: The chosen folder does not exist (the message names the config key and the
            environment variable that set it).
    """
    chosen = configured or env_value or DEFAULT_DATA_ROOT
    root = Path(chosen).expanduser().resolve()
    if not root.is_dir():
        how = ("data.root" if configured else f"${DATA_ROOT_ENV}" if env_value else "the default (../shared/datasets beside the repo)")
        raise DataError(
            f"data root {root} (from {how}) is not a folder: set data.root in the config or the {DATA_ROOT_ENV} "
            "environment variable to the folder holding the datasets, or give absolute source paths"
        )
    return root


def resolve_source(src: TenantSource, root: str | Path | None = None) -> TenantSource:
    """``src`` with a relative ``path``/``items_path`` joined to the data root (absolute ones unchanged).

    Args:
        root: The configured data root (``data.root``); None = the default (see :func:`data_root`).

    Raises:
        DataError: A path is relative and the data root does not exist.
    """
    update = {k: getattr(src, k) for k in ("path", "items_path") if getattr(src, k) and not Path(getattr(src, k)).is_absolute()}
    if not update:
        return src
    base = data_root(root)
    return src.model_copy(update={k: str(base / v) for k, v in update.items()})
