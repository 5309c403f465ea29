"""SASRec data files (``kang205/SASRec``, e.g. ``Video.txt``).

Each line is ``user_id item_id`` (1-based integers); rows are sorted by time within a user, so the
file order is kept. There is no item text ("") and no timestamp (-1); the catalog is the set of
interacted items. ``path`` may be the folder (``subset`` picks ``<subset>.txt``) or the file itself.

Reference: W.-C. Kang and J. McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rec.data.loaders._common import build_tenant, read_delimited, resolve_stem
from rec.data.schema import Tenant

__all__ = ["load_sasrec"]


def load_sasrec(path: Path, name: str, subset: str | None = None) -> Tenant:
    """Load a SASRec ``user item`` file.

    Raises:
        DataError: Missing file, or a line that is not two integers (line named).
    """
    fmt = "sasrec"
    path = Path(path)
    if not path.is_file():
        path = path / f"{resolve_stem(path, '.txt', subset, fmt)}.txt"
    df = read_delimited(path, " ", ["user", "item"], int_cols=["user", "item"])
    catalog = np.unique(df["item"].to_numpy())
    return build_tenant(name, f"{fmt}:{path}", df["user"], df["item"], None, catalog, [""] * len(catalog), where=str(path))
