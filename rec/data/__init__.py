"""Recommendation data: the Tenant representation, loaders, splits and the synthetic default."""

from rec.data.schema import DataError, ItemTable, Tenant, tenant_id_from, validate_tenant_id
from rec.data.splits import KShotSplit, LOOSplit, k_shot_split, leave_one_out

__all__ = [
    "DataError",
    "ItemTable",
    "KShotSplit",
    "LOOSplit",
    "Tenant",
    "k_shot_split",
    "leave_one_out",
    "tenant_id_from",
    "validate_tenant_id",
]
