"""S3-Rec processed sequences (``RUCAIBox/CIKM2020-S3Rec``): Beauty, Sports_and_Outdoors, Toys_and_Games, LastFM.

``<subset>.txt`` has one user per line, ``user_id item_1 item_2 ...`` in time order;
``<subset>_item2attributes.json`` is ``{item_id: [attribute ids]}``. There are no titles and no
timestamps (-1).

Item text is deliberately empty (""): the attributes are opaque integer ids, and a string such as
``"attributes: 12 45"`` would only feed the text encoder noise. Use these tenants with
``model.use_id_embedding=true`` (or to pretrain on sequences only). The catalog is every item of the
attribute file plus any interacted item it lacks.

Reference: K. Zhou et al., "S3-Rec: Self-Supervised Learning for Sequential Recommendation with
Mutual Information Maximization", CIKM 2020.
"""

from __future__ import annotations

import json
from pathlib import Path

from rec.data.loaders._common import build_tenant, read_text, require_files, resolve_stem
from rec.data.schema import DataError, Tenant

__all__ = ["load_s3rec"]


def load_s3rec(folder: Path, name: str, subset: str | None = None) -> Tenant:
    """Load ``<folder>/<subset>.txt`` (+ its attribute file for the catalog).

    Raises:
        DataError: Missing files, several subsets and none chosen, or a line that is not integers.
    """
    fmt = "s3rec"
    stem = resolve_stem(folder, "_item2attributes.json", subset, fmt)
    files = require_files(folder, [f"{stem}.txt", f"{stem}_item2attributes.json"], fmt)
    path = files[f"{stem}.txt"]
    users, items = [], []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if not all(p.isdigit() for p in parts):
            raise DataError(
                f"{path}, line {n}: expected space-separated integers 'user_id item_1 item_2 ...', got {line[:80]!r}"
            )
        users.extend([int(parts[0])] * (len(parts) - 1))
        items.extend(parts[1:])
    attr_path = files[f"{stem}_item2attributes.json"]
    try:
        attrs = json.loads(read_text(attr_path))
    except json.JSONDecodeError as e:
        raise DataError(
            f"{attr_path}, line {e.lineno}: invalid JSON ({e.msg}); expected {{item_id: [attribute ids]}}"
        ) from None
    if not isinstance(attrs, dict):
        raise DataError(f"{attr_path}: expected a JSON object {{item_id: [attribute ids]}}")
    catalog = sorted(attrs, key=lambda k: (0, int(k), "") if k.isdigit() else (1, 0, k))
    return build_tenant(
        name, f"{fmt}:{folder / stem}", users, items, None, catalog, [""] * len(catalog),
        unknown_items="append", where=str(path),
    )
