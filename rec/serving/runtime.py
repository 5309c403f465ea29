"""ONNX Runtime side of serving: one shared session, any mix of tenants per batch.

``SharedRanker`` loads a serving-model folder written by ``rec.export.onnx_export.export_serving_model``;
per request it turns (history item rows, tenant bundle) pairs into one feed
(:func:`rec.serving.feed.build_feed`) and runs the session once. Scoring against the tenant's
catalog matrix happens here in numpy (``top_k``): the catalog is per tenant and can be large, so it
is not a graph input (see docs/export.md).

Batches where no row has adapter tensors (zero-shot and head tenants) run the folder's base graph
of the same variant (``model.base.onnx`` / ``model.base.int8.onnx``,
:class:`rec.export.serving_graph.BaseGraph`) when it has one: the same model without the per-row
LoRA inputs, fed ``hist`` and ``pad`` only. Folders exported before it existed run every batch
through the per-row graph.
"""

from __future__ import annotations

from collections.abc import Callable

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rec.io.artifacts import ArtifactError, read_manifest
from rec.serving.bundles import TenantBundle
from rec.serving.errors import AdapterShapeError, FeedError
from rec.serving.feed import Feed, build_feed, catalog_scores

__all__ = ["SharedRanker", "make_session", "SERVING_KIND", "VARIANTS", "BASE_FILE", "BASE_VARIANTS", "BASE_INPUTS"]

SERVING_KIND = "serving-model"
VARIANTS = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
#: the graph without adapter inputs, per variant, for batches in which no row has an adapter tensor
BASE_VARIANTS = {"fp32": "model.base.onnx", "int8": "model.base.int8.onnx"}
BASE_FILE = BASE_VARIANTS["fp32"]
#: its inputs (``rec.export.serving_graph.BaseGraph``)
BASE_INPUTS = ("hist", "pad")


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
        """``[B, D]`` user vectors (already temperature-scaled): ``scores = user @ bundle.catalog_fp32().T``.

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
    def top_k(
        bundle: TenantBundle, user_vec: np.ndarray, k: int, exclude: set[int] | None = None,
        adjust: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best catalog rows of ``bundle`` for one user vector ``[D]``, best first.

        ``exclude`` rows (e.g. already seen items) are never returned; ``adjust`` maps the full
        ``[N]`` catalog scores before ranking (the online prior). Returns ``(rows, scores)``.
        """
        user_vec = np.asarray(user_vec, np.float32).reshape(-1)
        if user_vec.shape[0] != bundle.catalog.shape[1]:
            raise FeedError(f"user vector has {user_vec.shape[0]} dims, tenant {bundle.tenant!r} catalog has {bundle.catalog.shape[1]}")
        if k < 1:
            raise FeedError(f"k must be >= 1, got {k}")
        scores = catalog_scores(bundle, user_vec)
        if adjust is not None:
            scores = np.array(adjust(scores), np.float32)
        if exclude:
            ex = np.fromiter((i for i in exclude if 0 <= i < len(scores)), np.int64)
            scores[ex] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        if k == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        part = np.argpartition(-scores, k - 1)[:k]
        order = part[np.argsort(-scores[part], kind="stable")]
        return order.astype(np.int64), scores[order].astype(np.float32)
