"""Compact in-memory tenant bundles for serving replicas (the tenant LRU holds these).

``load_tenant_bundle`` (rec.export.tenant_bundle) verifies a bundle folder and returns fp32
arrays plus a Python list and dict of item ids: ~170 KB per tenant with a 300-item, d=64 catalog
and rank-8 LoRA, so 1,000 tenants cost ~170 MB of replica memory. A :class:`ServingBundle` keeps
what serving needs, compactly:

- the catalog **as stored** (``int8`` + per-row ``scale``, ``fp16`` or ``fp32``): an int8 catalog
  is 4x smaller and is used quantized (rows dequantized when gathered, scores scaled per row), so
  the served scores are exactly the stored bundle's;
- LoRA tensors in ``adapter_dtype`` (``fp16`` halves them; cast back to fp32 when the feed is
  built, see ``rec.export.runtime.build_feed``);
- item ids as one sorted numpy string array plus two int32 permutations (lookup by binary search)
  instead of a Python list + dict (~40 KB of Python objects per 300 ids).

``nbytes`` counts every array held, so the LRU budget (``tenant_cache_mb``) is honest.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
from safetensors.numpy import load_file as load_np

from rec.export.tenant_bundle import load_tenant_bundle
from rec.io.artifacts import ArtifactError

__all__ = ["ServingBundle", "ItemIds", "load_serving_bundle", "ADAPTER_DTYPES"]

ADAPTER_DTYPES = ("fp32", "fp16")
_NP = {"fp32": np.float32, "fp16": np.float16}
# Manifest keys a replica reads after loading (the full manifest stays on disk).
_KEEP = ("tenant", "method", "backbone_checksum", "catalog_dtype", "num_items", "d_model", "lora_ranks", "prompt_len")


class ItemIds:
    """A tenant's item ids in catalog-row order, held as numpy arrays.

    ``sorted`` is the ids sorted (fixed-width unicode), ``row_of_pos[p]`` the catalog row of
    ``sorted[p]``, ``pos_of_row[r]`` the inverse; lookups are one vectorized binary search.
    """

    __slots__ = ("sorted", "row_of_pos", "pos_of_row")

    def __init__(self, ids: Iterable[str]) -> None:
        arr = np.asarray([str(i) for i in ids], dtype=str)
        order = np.argsort(arr, kind="stable")
        self.sorted = arr[order]
        if len(arr) > 1 and bool((self.sorted[1:] == self.sorted[:-1]).any()):
            raise ArtifactError("duplicate item ids in the catalog")
        self.row_of_pos = order.astype(np.int32)
        self.pos_of_row = np.empty_like(self.row_of_pos)
        self.pos_of_row[self.row_of_pos] = np.arange(len(arr), dtype=np.int32)

    def __len__(self) -> int:
        return len(self.sorted)

    def __getitem__(self, row: int) -> str:
        return str(self.sorted[self.pos_of_row[row]])

    @property
    def nbytes(self) -> int:
        return int(self.sorted.nbytes + self.row_of_pos.nbytes + self.pos_of_row.nbytes)

    def rows_of(self, ids: Iterable[str]) -> tuple[np.ndarray, list[str]]:
        """Catalog rows of ``ids`` in order (int64) and the ids that are not in the catalog."""
        ids = list(ids)
        if not ids or not len(self.sorted):
            return np.zeros(0, np.int64), list(ids)
        q = np.asarray(ids, dtype=str)
        pos = np.minimum(np.searchsorted(self.sorted, q), len(self.sorted) - 1)
        hit = self.sorted[pos] == q
        rows = self.row_of_pos[pos[hit]].astype(np.int64)
        unknown = [ids[i] for i in np.flatnonzero(~hit)] if not hit.all() else []
        return rows, unknown


@dataclass(frozen=True, eq=False)
class ServingBundle:
    """What a replica holds for one tenant version (see module doc). Duck-compatible with
    ``TenantBundle`` where ``rec.export.runtime`` reads it (``catalog``, ``lora``, ``prompt``,
    ``rank``, ``tenant``), plus ``catalog_scale`` for int8 catalogs."""

    tenant: str
    method: str
    manifest: dict[str, Any]
    catalog: np.ndarray  # [N, D] float32 | float16 | int8 (as stored)
    catalog_scale: np.ndarray | None  # [N] float32 per-row scale of an int8 catalog
    lora: dict[str, tuple[np.ndarray, np.ndarray]]
    prompt: np.ndarray | None
    item_ids: ItemIds
    path: Path | None = None
    item_bias: np.ndarray | None = None  # [N] fp32 added to the scores (item-terms tenants)

    @property
    def rank(self) -> int:
        return max((a.shape[0] for a, _ in self.lora.values()), default=0)

    @property
    def num_items(self) -> int:
        return int(self.catalog.shape[0])

    @property
    def nbytes(self) -> int:
        arrays = [self.catalog, *(t for ab in self.lora.values() for t in ab)]
        arrays += [a for a in (self.catalog_scale, self.prompt, self.item_bias) if a is not None]
        return int(sum(a.nbytes for a in arrays)) + self.item_ids.nbytes

    def rows_of(self, ids: Iterable[str]) -> tuple[np.ndarray, list[str]]:
        return self.item_ids.rows_of(ids)

    def centroid(self) -> np.ndarray:
        """Mean item vector (fp32): the cold-start user vector. Computed once per bundle (read-only)."""
        return self._centroid

    @functools.cached_property
    def _centroid(self) -> np.ndarray:
        # every cold-start request needs it: without the cache each one copied the whole catalog to fp32
        if self.catalog_scale is not None:
            mean = (self.catalog_scale @ self.catalog.astype(np.float32)) / max(len(self.catalog), 1)
        else:
            mean = self.catalog.mean(axis=0, dtype=np.float32)
        mean = np.asarray(mean, np.float32)
        mean.flags.writeable = False
        return mean


def load_serving_bundle(path: str | Path, adapter_dtype: Literal["fp32", "fp16"] = "fp32") -> ServingBundle:
    """Load and verify a tenant bundle folder (``load_tenant_bundle``: checksums, shapes), then
    keep it compactly: the catalog in its stored dtype, LoRA in ``adapter_dtype``.

    Raises:
        ArtifactError: Whatever ``load_tenant_bundle`` refuses; unknown ``adapter_dtype``.
    """
    if adapter_dtype not in ADAPTER_DTYPES:
        raise ArtifactError(f"adapter dtype {adapter_dtype!r} is not one of {list(ADAPTER_DTYPES)}")
    full = load_tenant_bundle(path)
    dtype = full.manifest.get("catalog_dtype", "fp32")
    catalog, scale = full.catalog, None
    if dtype in ("int8", "fp16"):
        # The folder's checksums were just verified: re-read the catalog as stored (exact), not
        # the fp32 copy load_tenant_bundle decoded.
        stored = load_np(str(Path(path) / "catalog.safetensors"))
        catalog = np.ascontiguousarray(stored["catalog"])
        scale = np.ascontiguousarray(stored["scale"], dtype=np.float32) if dtype == "int8" else None
    lora = {name: (np.ascontiguousarray(a, _NP[adapter_dtype]), np.ascontiguousarray(b, _NP[adapter_dtype]))
            for name, (a, b) in full.lora.items()}
    manifest = {k: full.manifest[k] for k in _KEEP if k in full.manifest}
    return ServingBundle(full.tenant, full.method, manifest, catalog, scale, lora, full.prompt,
                         ItemIds(full.item_ids), full.path, full.item_bias)
