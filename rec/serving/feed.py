"""Feed building for the shared serving graph: (history item rows, tenant bundle) pairs -> one feed.

Feed rules (all exact, see ``rec.export.serving_graph``): histories are truncated to the model's
``max_seq_len`` most recent items and left-padded to the batch's longest; prompts are left-padded
to the batch's longest prompt with masked slots; every projection's LoRA rank is zero-padded to
the batch's largest rank, rows without LoRA get zeros.

Bundles may hold their catalog quantized (:class:`rec.serving.bundles.TenantBundle`: ``catalog``
int8 with a per-row ``catalog_scale``, or fp16) and LoRA tensors in fp16: rows are dequantized
when gathered into the fp32 feed and scores are scaled per row, so no fp32 copy is ever kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rec.data.padding import PAD, left_pad
from rec.serving.bundles import TenantBundle
from rec.serving.errors import AdapterShapeError, FeedError

__all__ = ["Feed", "build_feed", "catalog_rows", "catalog_scores", "PAD"]



@dataclass
class Feed:
    """Session inputs by name plus the item rows they came from (``rows [B,T]``, -1 = padding)."""

    inputs: dict[str, np.ndarray]
    rows: np.ndarray


def _check_bundle(b: TenantBundle, proj: dict[str, tuple[int, int]], d: int | None) -> None:
    if b.catalog.ndim != 2 or (d is not None and b.catalog.shape[1] != d):
        raise AdapterShapeError(f"tenant {b.tenant!r}: catalog has shape {b.catalog.shape}, the model needs (N, {d})")
    for name, (a, bb) in b.lora.items():
        if name not in proj:
            raise AdapterShapeError(f"tenant {b.tenant!r}: LoRA for {name!r}, which the serving model has no input for")
        i, o = proj[name]
        if a.ndim != 2 or bb.ndim != 2 or a.shape[1] != i or bb.shape != (o, a.shape[0]):
            raise AdapterShapeError(
                f"tenant {b.tenant!r}: LoRA {name!r} has A {a.shape} and B {bb.shape}; expected A (r, {i}) and B ({o}, r)"
            )
    if b.prompt is not None and (b.prompt.ndim != 2 or (d is not None and b.prompt.shape[1] != d)):
        raise AdapterShapeError(f"tenant {b.tenant!r}: prompt has shape {b.prompt.shape}, expected (P, {d})")


def catalog_rows(b: TenantBundle, rows: np.ndarray) -> np.ndarray:
    """fp32 catalog rows of bundle ``b`` (dequantized when the catalog is int8 with a per-row scale)."""
    got = b.catalog[rows]
    scale = b.catalog_scale
    if scale is not None:
        return got.astype(np.float32) * scale[rows, None]
    return got.astype(np.float32, copy=False)


def catalog_scores(b: Any, user_vec: np.ndarray) -> np.ndarray:
    """``catalog @ user_vec (+ item_bias)`` in fp32 for any stored catalog dtype (a fresh array).

    ``item_bias`` (item-terms tenants) is the per-item score term learned at adaptation: one add
    of ``N`` floats beside the ``N x D`` product.
    """
    scores = np.asarray(b.catalog @ user_vec, dtype=np.float32)
    scale = getattr(b, "catalog_scale", None)
    if scale is not None:
        scores *= scale
    bias = getattr(b, "item_bias", None)
    if bias is not None:
        scores += bias
    return scores


def build_feed(
    histories: list[np.ndarray], bundles: list[TenantBundle], projections: list[tuple[str, int, int]], max_len: int
) -> Feed:
    """One feed for a batch of (history item rows, tenant bundle) pairs (see module doc).

    Raises:
        FeedError: Mismatched lengths, empty batch, non-integer or out-of-range item rows.
        AdapterShapeError: A bundle's catalog/LoRA/prompt does not fit the model.
    """
    if len(histories) != len(bundles):
        raise FeedError(f"{len(histories)} histories but {len(bundles)} bundles: pass one bundle per row")
    if not histories:
        raise FeedError("empty batch: pass at least one history")
    proj = {n: (i, o) for n, i, o in projections}
    d = bundles[0].catalog.shape[1] if bundles[0].catalog.ndim == 2 else None
    seen: set[int] = set()
    for b in bundles:
        if id(b) not in seen:
            _check_bundle(b, proj, d)
            seen.add(id(b))
    rows = []
    for h in histories:
        h = np.asarray(h)
        if h.ndim != 1 or (h.size and not np.issubdtype(h.dtype, np.integer)):
            raise FeedError(f"a history must be a 1-D array of integer item rows, got dtype {h.dtype} shape {h.shape}")
        rows.append(h[-max_len:])
    idx = left_pad(rows, max_len, fit_longest=True)
    B, T = idx.shape
    lens = np.fromiter((len(h) for h in rows), np.int64, B)
    real = np.arange(T)[None, :] >= (T - lens)[:, None]  # not padding (an item row of -1 is an error, not padding)
    hist = np.zeros((B, T, d), np.float32)
    # one bounds check and one gather per tenant in the batch (not per row)
    groups: dict[int, list[int]] = {}
    for r, b in enumerate(bundles):
        groups.setdefault(id(b), []).append(r)
    for members in groups.values():
        b = bundles[members[0]]
        sub, used = (idx, real) if len(members) == B else (idx[members], real[members])
        if not used.any():
            continue
        lo, hi = int(sub[used].min()), int(sub[used].max())
        if lo < 0 or hi >= len(b.catalog):
            raise FeedError(f"tenant {b.tenant!r}: item rows must lie in [0, {len(b.catalog)}), got {lo}..{hi}")
        rr, cc = np.nonzero(used)
        hist[np.asarray(members)[rr], cc] = catalog_rows(b, sub[rr, cc])
    P = max((0 if b.prompt is None else len(b.prompt)) for b in bundles)
    prompt = np.zeros((B, P, d), np.float32)
    prompt_pad = np.ones((B, P), bool)
    for r, b in enumerate(bundles):
        if b.prompt is not None and len(b.prompt):
            prompt[r, P - len(b.prompt) :] = b.prompt
            prompt_pad[r, P - len(b.prompt) :] = False
    R = max(1, max(b.rank for b in bundles))
    inputs = {"hist": hist, "pad": ~real, "prompt": prompt, "prompt_pad": prompt_pad}
    # one broadcast copy per (tenant, projection), not per row: a batch is often few tenants
    members_of = [(bundles[m[0]], np.asarray(m)) for m in groups.values()]
    for name, i, o in projections:
        A = np.zeros((B, R, i), np.float32)
        Bm = np.zeros((B, o, R), np.float32)
        for b, members in members_of:
            ab = b.lora.get(name)
            if ab is not None:
                k = ab[0].shape[0]
                A[members, :k] = ab[0]
                Bm[members, :, :k] = ab[1]
        inputs[f"lora_a.{name}"], inputs[f"lora_b.{name}"] = A, Bm
    return Feed(inputs, idx)
