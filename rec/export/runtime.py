"""ONNX Runtime side of serving: one shared session, any mix of tenants per batch.

``SharedRanker`` loads a serving-model folder written by ``export_serving_model``; per request it
turns (history item rows, tenant bundle) pairs into one feed (:func:`build_feed`) and runs the
session once. Scoring against the tenant's catalog matrix happens here in numpy (``top_k``): the
catalog is per tenant and can be large, so it is not a graph input (see docs/export.md).

Feed rules (all exact, see ``rec.export.serving_graph``): histories are truncated to the model's
``max_seq_len`` most recent items and left-padded to the batch's longest; prompts are left-padded
to the batch's longest prompt with masked slots; every projection's LoRA rank is zero-padded to
the batch's largest rank, rows without LoRA get zeros.

Batches where no row has adapter tensors (zero-shot and head tenants) run the folder's base graph
of the same variant (``model.base.onnx`` / ``model.base.int8.onnx``,
:class:`rec.export.serving_graph.BaseGraph`) when it has one: the same model without the per-row
LoRA inputs, fed ``hist`` and ``pad`` only. Folders exported before it existed run every batch
through the per-row graph.

Bundles may hold their catalog quantized (``rec.serving.bundles.ServingBundle``: ``catalog`` int8
with a per-row ``catalog_scale``, or fp16) and LoRA tensors in fp16: rows are dequantized when
gathered into the fp32 feed and scores are scaled per row, so no fp32 copy is ever kept.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rec.export.errors import AdapterShapeError, FeedError
from rec.export.tenant_bundle import TenantBundle
from rec.io.artifacts import ArtifactError, read_manifest

__all__ = ["SharedRanker", "Feed", "build_feed", "catalog_rows", "catalog_scores", "make_session", "SERVING_KIND", "VARIANTS",
           "BASE_FILE", "BASE_VARIANTS", "BASE_INPUTS"]

SERVING_KIND = "serving-model"
VARIANTS = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
#: the graph without adapter inputs, per variant, for batches in which no row has an adapter tensor
BASE_VARIANTS = {"fp32": "model.base.onnx", "int8": "model.base.int8.onnx"}
BASE_FILE = BASE_VARIANTS["fp32"]
#: its inputs (``rec.export.serving_graph.BaseGraph``)
BASE_INPUTS = ("hist", "pad")
PAD = -1


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


def catalog_rows(b: Any, rows: np.ndarray) -> np.ndarray:
    """fp32 catalog rows of bundle ``b`` (dequantized when the catalog is int8 with a per-row scale)."""
    got = b.catalog[rows]
    scale = getattr(b, "catalog_scale", None)
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
    B, T = len(rows), max(1, max(len(h) for h in rows))
    idx = np.full((B, T), PAD, np.int64)
    for r, h in enumerate(rows):
        if len(h):
            idx[r, T - len(h) :] = h
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


def make_session(path: str | Path, intra_op_threads: int = 1, providers: list[str] | None = None):  # noqa: ANN201
    """An ORT ``InferenceSession`` with explicit threads; ``ArtifactError`` if the file is no valid model.

    ``providers=None`` uses CPU, plus CUDA first when an NVIDIA device is present (onnxruntime-gpu
    lists CUDA even where it cannot load, so probing the device avoids its loud fallback error).
    """
    import onnxruntime as ort

    if providers is None:
        providers = ["CPUExecutionProvider"]
        if os.path.exists("/dev/nvidia0") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), so, providers=providers)
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for corrupt files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ArtifactError(f"{path}: ONNX Runtime cannot load the model ({msg}); re-export it with `rec export`") from None


class SharedRanker:
    """The shared serving model: ``user_vectors`` for mixed-tenant batches, ``top_k`` per tenant.

    Args:
        model_dir: A folder written by ``export_serving_model`` (manifest and checksums verified).
        intra_op_threads: ORT threads per ``run`` (1: one Serve replica per core).
        variant: ``fp32`` (``model.onnx``) or ``int8`` (``model.int8.onnx``, export with quantize).
        base_graph: Run adapter-free batches on the folder's base graph of the same variant (ignored
            when the folder has none). ``False`` sends every batch through the per-row graph.

    ``session.run`` is thread-safe in ORT and feeds are built per call, so one instance can serve
    concurrent requests of one replica.

    Raises:
        ArtifactError: Missing/corrupt folder or file, unknown variant, inputs differ from manifest.
    """

    def __init__(self, model_dir: str | Path, intra_op_threads: int = 1, variant: str = "fp32",
                 providers: list[str] | None = None, base_graph: bool = True) -> None:
        self.model_dir = Path(model_dir)
        if variant not in VARIANTS:
            raise ArtifactError(f"unknown model variant {variant!r}: choose from {list(VARIANTS)}")
        if not self.model_dir.is_dir():
            raise ArtifactError(f"serving model {self.model_dir} does not exist: pass the folder `rec export` printed")
        self.manifest: dict[str, Any] = read_manifest(self.model_dir, kind=SERVING_KIND)
        path = self.model_dir / VARIANTS[variant]
        if VARIANTS[variant] not in self.manifest.get("files", {}):
            raise ArtifactError(f"{self.model_dir} has no {variant} variant ({VARIANTS[variant]}); export with --int8")
        self.variant = variant
        self.session = make_session(path, intra_op_threads, providers)
        self.projections = [tuple(p) for p in self.manifest["projections"]]
        self.max_len = int(self.manifest["max_seq_len"])
        self.d_model = int(self.manifest["d_model"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        expected = [i["name"] for i in self.manifest["inputs"]]
        if self.input_names != expected:
            raise ArtifactError(f"{path}: graph inputs {self.input_names[:6]}... differ from the manifest's {expected[:6]}...")
        self.output_name = self.session.get_outputs()[0].name
        self.base_session = None
        base_file = BASE_VARIANTS[variant]
        if base_graph and base_file in self.manifest.get("files", {}):
            self.base_session = make_session(self.model_dir / base_file, intra_op_threads, providers)
            got = [i.name for i in self.base_session.get_inputs()]
            if got != list(BASE_INPUTS):
                raise ArtifactError(f"{self.model_dir / base_file}: graph inputs {got} differ from {list(BASE_INPUTS)}")
        self._lock = threading.Lock()  # guards only the counters below
        self.runs = 0
        self.base_runs = 0  # of which on the base graph

    # --- inputs --------------------------------------------------------------------------------
    def build_feed(self, histories: list[np.ndarray], bundles: list[TenantBundle]) -> Feed:
        """The feed for this batch: base-graph inputs when no row has adapter tensors, else per-row."""
        base = self.base_session is not None and all(not b.lora and b.prompt is None for b in bundles)
        feed = build_feed(histories, bundles, [] if base else self.projections, self.max_len)
        if feed.inputs["hist"].shape[2] != self.d_model:
            raise AdapterShapeError(f"catalog width {feed.inputs['hist'].shape[2]} != model d_model {self.d_model}")
        if base:
            feed.inputs = {n: feed.inputs[n] for n in BASE_INPUTS}
        return feed

    def raw_run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """One ``session.run`` on a prepared feed (the benchmark times this); returns ``user [B,D]``.

        A feed without adapter tensors (no ``lora_*``/``prompt*`` names) runs on the base graph when
        it is loaded, and its names are checked against the base graph's.
        """
        session, names = self.session, self.input_names
        if self.base_session is not None and not any(n.startswith(("lora_", "prompt")) for n in inputs):
            session, names = self.base_session, list(BASE_INPUTS)
        missing = [n for n in names if n not in inputs]
        unknown = [n for n in inputs if n not in names]
        if missing or unknown:
            raise FeedError(f"feed names do not match the model: missing {missing[:4]}, unknown {unknown[:4]} "
                            f"(expected {len(names)} inputs: {names[:4]}...)")
        try:
            out = session.run([self.output_name], inputs)[0]
        except Exception as e:  # noqa: BLE001 - ORT reports bad shapes/dtypes as its own exceptions
            raise FeedError(f"ONNX Runtime rejected the feed: {str(e).splitlines()[0]}") from None
        with self._lock:
            self.runs += 1
            self.base_runs += session is self.base_session
        return out

    # --- serving -------------------------------------------------------------------------------
    def user_vectors(self, histories: list[np.ndarray], bundles: list[TenantBundle],
                     timings: dict[str, float] | None = None) -> np.ndarray:
        """``[B, D]`` user vectors (already temperature-scaled): ``scores = user @ bundle.catalog.T``.

        ``timings`` (optional) receives ``feed_s`` and ``ort_s`` for this call.
        """
        t0 = time.perf_counter()
        feed = self.build_feed(histories, bundles)
        t1 = time.perf_counter()
        out = self.raw_run(feed.inputs)
        if timings is not None:
            timings["feed_s"], timings["ort_s"] = t1 - t0, time.perf_counter() - t1
        return out

    @staticmethod
    def top_k(bundle: TenantBundle, user_vec: np.ndarray, k: int, exclude: set[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best catalog rows of ``bundle`` for one user vector ``[D]``, best first.

        ``exclude`` rows (e.g. already seen items) are never returned. Returns ``(rows, scores)``.
        """
        user_vec = np.asarray(user_vec, np.float32).reshape(-1)
        if user_vec.shape[0] != bundle.catalog.shape[1]:
            raise FeedError(f"user vector has {user_vec.shape[0]} dims, tenant {bundle.tenant!r} catalog has {bundle.catalog.shape[1]}")
        if k < 1:
            raise FeedError(f"k must be >= 1, got {k}")
        scores = catalog_scores(bundle, user_vec)
        if exclude:
            ex = np.fromiter((i for i in exclude if 0 <= i < len(scores)), np.int64)
            scores[ex] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        if k == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        part = np.argpartition(-scores, k - 1)[:k]
        order = part[np.argsort(-scores[part], kind="stable")]
        return order.astype(np.int64), scores[order].astype(np.float32)
