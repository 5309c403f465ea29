"""Write a tenant in the generic CSV format (see docs/data-formats.md), e.g. the synthetic default."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rec.data.schema import Tenant
from rec.io.artifacts import atomic_write_bytes

__all__ = ["write_generic"]


def write_generic(tenant: Tenant, folder: str | Path) -> tuple[Path, Path]:
    """Write ``interactions.csv`` (user_id,item_id,timestamp) and ``items.csv`` (item_id,title)."""
    folder = Path(folder)
    lens = tenant.lengths()
    inter = pd.DataFrame(
        {
            "user_id": tenant.users.repeat(lens),
            "item_id": tenant.items.ids[tenant.item_index],
            "timestamp": tenant.timestamps,
        }
    )
    items = pd.DataFrame({"item_id": tenant.items.ids, "title": tenant.items.text})
    ip, tp = folder / "interactions.csv", folder / "items.csv"
    atomic_write_bytes(ip, inter.to_csv(index=False).encode())
    atomic_write_bytes(tp, items.to_csv(index=False).encode())
    return ip, tp
