"""Tenant bundles: what the shared serving graph needs to serve one tenant, as a replica holds it.

A bundle folder (written by ``rec.export.tenant_bundle.export_tenant_bundle``, an artifact folder
of ``rec.io.artifacts``)::

    <out>/
      catalog.safetensors          "catalog" [N,D] fp32 | fp16 | int8 (+ "scale" [N] fp32 for int8)
      item_ids.json                the tenant's external item ids, in catalog row order
      adapter_tensors.safetensors  "lora_a.<proj>" [r,in], "lora_b.<proj>" [out,r], "prompt" [P,D]
      manifest.json                kind=tenant-bundle, tenant, method, catalog dtype, checksums, ...

:func:`load_tenant_bundle` reads each file once (its checksum is computed on the bytes it parses)
and returns one :class:`TenantBundle`, the only bundle type of the code base (export builds the
same class in fp32 before writing it). It keeps what serving needs, compactly:

- the catalog **as stored** (``int8`` + per-row ``catalog_scale``, ``fp16`` or ``fp32``): an int8
  catalog is 4x smaller and is used quantized (rows dequantized when gathered, scores scaled per
  row, see ``rec.serving.feed``), so the served scores are exactly the stored bundle's;
  :meth:`TenantBundle.catalog_fp32` gives the dequantized matrix to code that needs one;
- LoRA tensors in ``adapter_dtype`` (``fp16`` halves them; cast back to fp32 in the feed);
- item ids as one sorted numpy string array plus two int32 permutations (:class:`ItemIds`, lookup
  by binary search) instead of a Python list + dict (~40 KB of Python objects per 300 ids).

``nbytes`` counts every array held, so the replica's LRU budget (``tenant_cache_mb``) is honest.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from safetensors.numpy import load as load_np_bytes

from rec.io.artifacts import ArtifactError, read_manifest, sha256_file
from rec.io.formats import ADAPTER_DTYPES, CATALOG_DTYPES  # one list each, shared with rec.config

__all__ = ["TenantBundle", "ItemIds", "load_tenant_bundle", "decode_catalog", "ADAPTER_DTYPES", "CATALOG_DTYPES", "KIND"]

KIND = "tenant-bundle"
_NP = {"fp32": np.float32, "fp16": np.float16}
# Manifest keys a replica reads after loading (the full manifest stays on disk).
_KEEP = ("tenant", "method", "backbone_checksum", "catalog_dtype", "num_items", "d_model", "lora_ranks", "prompt_len",
         "item_bias")
_FILES = ("catalog.safetensors", "adapter_tensors.safetensors", "item_ids.json")


class ItemIds:
    """A tenant's item ids in catalog-row order, held as numpy arrays.

    ``sorted`` is the ids sorted (fixed-width unicode), ``row_of_pos[p]`` the catalog row of
    ``sorted[p]``, ``pos_of_row[r]`` the inverse; lookups are one vectorized binary search.
    Indexing (``ids[row]``, ``ids[a:b]``) and iteration follow catalog-row order.
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

    def __getitem__(self, row: int | slice) -> str | list[str]:
        if isinstance(row, slice):
            return self.sorted[self.pos_of_row[row]].tolist()
        return str(self.sorted[self.pos_of_row[row]])

    def __iter__(self) -> Iterator[str]:
        return iter(self.tolist())

    def tolist(self) -> list[str]:
        """The ids in catalog-row order (what ``item_ids.json`` holds)."""
        return self.sorted[self.pos_of_row].tolist()

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
class TenantBundle:
    """One tenant version's catalog, adapter tensors and item ids (see module doc).

    Args:
        tenant: Tenant id.
        item_ids: External ids in catalog-row order (any iterable of str; held as :class:`ItemIds`).
        catalog: ``[N, D]`` item vectors, float32 | float16 | int8 (int8 with ``catalog_scale``).
        lora: Projection name -> ``(A [r, in], B [out, r])`` (scaling folded into B).
        prompt: ``[P, D]`` soft prompt, or None.
        method: Adaptation method that produced it (``zero-shot``, ``lora``, ...).
        manifest: Manifest fields (a replica keeps the few it reads).
        catalog_scale: ``[N]`` float32 per-row scale of an int8 catalog, else None.
        path: The folder it was loaded from, if any.
        item_bias: ``[N]`` float32 per-item score term (item-terms tenants), else None.
    """

    tenant: str
    item_ids: ItemIds
    catalog: np.ndarray
    lora: dict[str, tuple[np.ndarray, np.ndarray]]
    prompt: np.ndarray | None
    method: str
    manifest: dict[str, Any]
    catalog_scale: np.ndarray | None = None
    path: Path | None = None
    item_bias: np.ndarray | None = None  # [N] fp32 added to catalog @ user (item-terms tenants)

    def __post_init__(self) -> None:
        if not isinstance(self.item_ids, ItemIds):
            object.__setattr__(self, "item_ids", ItemIds(self.item_ids))
        if self.catalog.dtype == np.int8 and self.catalog_scale is None:
            raise ArtifactError(f"tenant {self.tenant!r}: an int8 catalog needs its per-row catalog_scale")

    @property
    def rank(self) -> int:
        """Largest LoRA rank of the bundle (0 without LoRA)."""
        return max((a.shape[0] for a, _ in self.lora.values()), default=0)

    @property
    def num_items(self) -> int:
        return int(self.catalog.shape[0])

    @property
    def nbytes(self) -> int:
        """Resident bytes of every array held (catalog, scale, adapter tensors, prompt, item ids)."""
        arrays = [self.catalog, *(t for ab in self.lora.values() for t in ab)]
        arrays += [a for a in (self.catalog_scale, self.prompt, self.item_bias) if a is not None]
        return int(sum(a.nbytes for a in arrays)) + self.item_ids.nbytes

    def rows_of(self, ids: Iterable[str]) -> tuple[np.ndarray, list[str]]:
        return self.item_ids.rows_of(ids)

    def catalog_fp32(self) -> np.ndarray:
        """The catalog dequantized to float32 ``[N, D]`` (a copy unless it is stored fp32)."""
        if self.catalog_scale is not None:
            return self.catalog.astype(np.float32) * self.catalog_scale[:, None]
        return self.catalog.astype(np.float32, copy=False)

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


def decode_catalog(tensors: dict[str, np.ndarray], dtype: str) -> np.ndarray:
    """The stored catalog tensors (``catalog`` [+ ``scale``]) as float32 ``[N, D]``."""
    cat = tensors["catalog"]
    if dtype == "int8":
        return cat.astype(np.float32) * tensors["scale"][:, None]
    return cat.astype(np.float32)


def _read_verified(folder: Path, manifest: dict[str, Any]) -> dict[str, bytes]:
    """The bundle's files as bytes, each read once and checked against the manifest's size and sha256.

    Files the manifest lists beyond the ones a bundle needs are verified from disk too."""
    files = manifest.get("files", {})
    out = {}
    for rel, info in files.items():
        p = folder / rel
        if not p.is_file():
            raise ArtifactError(f"{folder}: file {rel} listed in the manifest is missing.")
        if rel in _FILES:
            data = p.read_bytes()
            ok = len(data) == info["bytes"] and hashlib.sha256(data).hexdigest() == info["sha256"]
            out[rel] = data
        else:
            ok = p.stat().st_size == info["bytes"] and sha256_file(p) == info["sha256"]
        if not ok:
            raise ArtifactError(f"{folder}: checksum mismatch for {rel}; the artifact is corrupt.")
    missing = [f for f in _FILES if f not in out]
    if missing:
        raise ArtifactError(f"{folder}: the manifest lists no {missing}; this is not a complete tenant bundle")
    return out


def load_tenant_bundle(path: str | Path, adapter_dtype: Literal["fp32", "fp16"] = "fp32") -> TenantBundle:
    """Load and verify a tenant bundle folder: catalog as stored, LoRA in ``adapter_dtype``.

    Raises:
        ArtifactError: Missing folder/manifest, not a tenant bundle, checksum mismatch, tensors
            inconsistent with the manifest, or an unknown ``adapter_dtype``.
    """
    if adapter_dtype not in ADAPTER_DTYPES:
        raise ArtifactError(f"adapter dtype {adapter_dtype!r} is not one of {list(ADAPTER_DTYPES)}")
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"tenant bundle {path} does not exist: pass the folder `rec export-tenant` printed")
    manifest = read_manifest(path, verify=False, kind=KIND)
    raw = _read_verified(path, manifest)
    try:
        cat = load_np_bytes(raw["catalog.safetensors"])
        tens = load_np_bytes(raw["adapter_tensors.safetensors"])
        item_ids = json.loads(raw["item_ids.json"])
    except Exception as e:  # noqa: BLE001 - any parse failure of a checksummed file means corruption
        raise ArtifactError(f"{path}: cannot read the bundle ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    dtype = manifest.get("catalog_dtype")
    if dtype not in CATALOG_DTYPES or "catalog" not in cat or (dtype == "int8" and "scale" not in cat):
        raise ArtifactError(f"{path}: catalog tensors do not match catalog_dtype={dtype!r}")
    catalog = np.ascontiguousarray(cat["catalog"])
    scale = np.ascontiguousarray(cat["scale"], dtype=np.float32) if dtype == "int8" else None
    if catalog.shape != (manifest["num_items"], manifest["d_model"]) or len(item_ids) != len(catalog):
        raise ArtifactError(f"{path}: catalog shape {catalog.shape} / {len(item_ids)} item ids disagree with the manifest")
    want = _NP[adapter_dtype]
    lora = {}
    for key in tens:
        if key.startswith("lora_a."):
            name = key.removeprefix("lora_a.")
            if f"lora_b.{name}" not in tens:
                raise ArtifactError(f"{path}: {key} has no matching lora_b.{name}")
            lora[name] = (np.ascontiguousarray(tens[key], want), np.ascontiguousarray(tens[f"lora_b.{name}"], want))
    prompt = tens["prompt"].astype(np.float32) if "prompt" in tens else None
    bias = np.ascontiguousarray(cat["item_bias"], dtype=np.float32) if "item_bias" in cat else None
    if bias is not None and bias.shape != (len(catalog),):
        raise ArtifactError(f"{path}: item_bias has shape {bias.shape}, the catalog {len(catalog)} rows")
    kept = {k: manifest[k] for k in _KEEP if k in manifest}
    return TenantBundle(manifest["tenant"], ItemIds(item_ids), catalog, lora, prompt, manifest["method"], kept, scale, path, bias)
