"""Recipe: export, verify and publish the shared multi-tenant serving model.

    <out>/
      model.onnx        fp32, one file (no external data), dynamic batch/seq/prompt/rank
      model.base.onnx   fp32, the same backbone without adapter inputs (``hist``, ``pad``): what
                        batches with no adapter tensor run (zero-shot, head and item-terms tenants)
      model.int8.onnx   optional: ORT dynamic quantization (int8 weights) of model.onnx
      model.base.int8.onnx  with it: the same quantization of model.base.onnx
      manifest.json     kind=serving-model: opset, inputs/outputs (names, dtypes, symbolic shapes),
                        projections, backbone checksum, parity numbers, sizes, file checksums

Steps: trace examples -> fp32 graph (gated parity: random, structural, real) -> base graph (gated)
-> latency -> optional int8 of both (measured, not gated) -> publish atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rec.export.parity import (
    ParityData,
    chunks,
    gate,
    latency_ms,
    random_batch,
    random_bundles,
    run_parity,
    structural_checks,
)
from rec.export.quantization import quantize_measured
from rec.serving.feed import build_feed
from rec.serving.runtime import BASE_FILE, BASE_INPUTS, BASE_VARIANTS, SERVING_KIND, VARIANTS, make_session
from rec.export.serving_graph import OUTPUT_NAME, BaseGraph, ServingGraph
from rec.serving.bundles import TenantBundle
from rec.export.tracing import io_spec, opset_of, torch_export
from rec.io.artifacts import artifact_writer
from rec.training.checkpoint import LoadedBackbone

__all__ = ["export_serving_model"]

DYNAMIC_DIMS = {"batch": [1, 65536], "seq": [1, 8192], "prompt_len": [0, 1024], "rank": [1, 1024]}


@dataclass
class _Examples:
    """Trace inputs, their dynamic dims, and the random batches parity runs on."""

    bundles: list[TenantBundle]
    args: tuple[torch.Tensor, ...]
    dynamic: tuple
    batches: list  # mixed tenants, adapters included
    batches_base: list  # zero-shot rows only: what the base graph is checked on


def _examples(graph: ServingGraph, loaded: LoadedBackbone, max_len: int, rng: np.random.Generator) -> _Examples:
    bundles = random_bundles(loaded, graph, rng)
    # Example sizes for tracing: >= 2 and distinct, since torch.export specializes sizes 0 and 1
    # (B=4, T=min(7, max_len), P=3, rank=16; the structural checks then run B=1, T=1, P=0, rank=1).
    ex = build_feed([rng.integers(0, 50, n) for n in (5, 7, 3, 2)], [bundles[1], bundles[4], bundles[3], bundles[2]],
                    graph.projections, max_len)
    args = tuple(torch.from_numpy(ex.inputs[n]) for n in graph.input_names)
    Dim = torch.export.Dim
    b, t = Dim("batch", min=1, max=65536), Dim("seq", min=1, max=8192)
    p, r = Dim("prompt_len", min=0, max=1024), Dim("rank", min=1, max=1024)
    lora_shapes = tuple(s for _ in graph.projections for s in ({0: b, 1: r}, {0: b, 2: r}))
    dynamic = ({0: b, 1: t}, {0: b, 1: t}, {0: b, 1: p}, {0: b, 1: p}, lora_shapes)
    batches = [random_batch(bundles, max_len, rng)] + [random_batch(bundles, max_len, rng, rows=2) for _ in range(2)]
    # the base graph is checked on zero-shot rows (bundles[0]: no adapter), lengths 1..max_len
    batches_base = [random_batch(bundles[:1], max_len, rng)] + [random_batch(bundles[:1], max_len, rng, rows=2) for _ in range(2)]
    return _Examples(bundles, args, dynamic, batches, batches_base)


def _fp32_graph(graph: ServingGraph, loaded: LoadedBackbone, ex: _Examples, path: Path, opset: int | None,
                real_data: ParityData | None, meta: dict[str, Any]):  # noqa: ANN202 - ORT session
    """Export the per-row graph, gate its parity (random, structural, real); its session."""
    max_len = meta["max_seq_len"]
    torch_export(graph, ex.args, ex.dynamic, graph.input_names, OUTPUT_NAME, path, opset)
    sess = make_session(path, providers=["CPUExecutionProvider"])
    meta.update(io_spec(sess), opset=opset_of(path))
    par = {"random": run_parity(sess, graph, max_len, ex.batches)}
    gate(par["random"], "fp32 serving model, random inputs")
    par.update(structural_checks(sess, graph, max_len, ex.bundles, loaded))
    if real_data is not None:
        par["real"] = run_parity(sess, graph, max_len, list(chunks(real_data)))
        par["real"]["tenant"] = real_data.bundle.tenant
        gate(par["real"], f"fp32 serving model, real inputs of {real_data.bundle.tenant}")
    meta["parity"]["fp32"] = par
    meta["sizes"][path.name] = path.stat().st_size
    return sess


def _base_graph(graph: ServingGraph, loaded: LoadedBackbone, ex: _Examples, path: Path, opset: int | None,
                real_data: ParityData | None, meta: dict[str, Any]):  # noqa: ANN202 - ORT session
    """Export :class:`BaseGraph` (the serving graph's first two inputs and dims), gate its parity; its session."""
    max_len = meta["max_seq_len"]
    torch_export(BaseGraph(loaded.model).eval(), ex.args[:2], ex.dynamic[:2], list(BASE_INPUTS), OUTPUT_NAME, path, opset)
    base_sess = make_session(path, providers=["CPUExecutionProvider"])
    meta["parity"]["base"] = {"random": run_parity(base_sess, graph, max_len, ex.batches_base)}
    gate(meta["parity"]["base"]["random"], "base serving model (no adapter inputs), random inputs")
    if real_data is not None:
        meta["parity"]["base"]["real"] = run_parity(base_sess, graph, max_len, list(chunks(real_data)))
        gate(meta["parity"]["base"]["real"], f"base serving model, real inputs of {real_data.bundle.tenant}")
    meta["sizes"][path.name] = path.stat().st_size
    meta["base_graph"] = {"file": path.name, "inputs": list(BASE_INPUTS)}
    return base_sess


def _latency_feeds(graph: ServingGraph, ex: _Examples, max_len: int) -> tuple[dict, dict]:
    """Feeds of 1 and 32 rows of max_len items: mixed tenants (per-row graph) and zero-shot (base graph)."""
    lat = {n: build_feed(*random_batch(ex.bundles, max_len, np.random.default_rng(n), rows=n, lengths=max_len),
                         graph.projections, max_len).inputs for n in (1, 32)}
    base = {}
    for n in (1, 32):
        feed = build_feed(*random_batch(ex.bundles[:1], max_len, np.random.default_rng(n), rows=n, lengths=max_len), [], max_len)
        base[n] = {k: feed.inputs[k] for k in BASE_INPUTS}
    return lat, base


def _int8_graphs(tmp: Path, graph: ServingGraph, ex: _Examples, sessions: tuple, feeds: tuple,
                 real_data: ParityData | None, meta: dict[str, Any]) -> None:
    """int8 of both graphs, each measured against its fp32 source (recorded, not gated)."""
    max_len = meta["max_seq_len"]
    (sess, base_sess), (lat_feeds, base_feeds) = sessions, feeds
    fp32, int8 = tmp / VARIANTS["fp32"], tmp / VARIANTS["int8"]
    meta["quantization"], meta["parity"]["int8"], qs = quantize_measured(fp32, int8, sess, graph, max_len, ex.batches, real_data)
    meta["sizes"][int8.name] = int8.stat().st_size
    meta["sizes"]["int8_ratio"] = int8.stat().st_size / fp32.stat().st_size
    meta["latency"]["int8"] = latency_ms(qs, lat_feeds)
    base8 = tmp / BASE_VARIANTS["int8"]
    meta["quantization_base"], meta["parity"]["base_int8"], bq = quantize_measured(
        tmp / BASE_FILE, base8, base_sess, graph, max_len, ex.batches_base, real_data)
    meta["sizes"][base8.name] = base8.stat().st_size
    meta["base_graph"]["int8_file"] = base8.name
    meta["latency"]["base_int8"] = latency_ms(bq, base_feeds)


def export_serving_model(
    loaded: LoadedBackbone,
    out_dir: str | Path,
    *,
    opset: int | None = None,
    quantize: bool = False,
    real_data: ParityData | None = None,
    seed: int = 0,
) -> Path:
    """Export, verify and publish the shared serving model (see module doc) at ``out_dir``.

    Args:
        loaded: The pretrained backbone (``load_backbone``).
        opset: ONNX opset (default: the exporter's).
        quantize: Also write ``model.int8.onnx`` and record its quality.
        real_data: Real inputs (``parity_data_from_tenant``) for parity and int8 NDCG@10; random
            inputs are always checked.

    Raises:
        ExportError: Export/checker failure or parity failure (nothing is published).
    """
    t_start = time.perf_counter()
    graph = ServingGraph(loaded.model).eval()
    max_len = int(loaded.cfg.data.max_seq_len)
    ex = _examples(graph, loaded, max_len, np.random.default_rng(seed))
    meta: dict[str, Any] = {
        "backbone_checksum": loaded.checksum,
        "text_model": loaded.manifest.get("text_model"),
        "d_model": int(loaded.model.d_model),
        "max_seq_len": max_len,
        "temperature": float(loaded.model.temperature),
        "projections": [list(x) for x in graph.projections],
        "dynamic_dims": DYNAMIC_DIMS,
        "parity": {},
        "sizes": {},
    }
    with artifact_writer(out_dir, kind=SERVING_KIND, meta=meta) as tmp:
        sess = _fp32_graph(graph, loaded, ex, tmp / VARIANTS["fp32"], opset, real_data, meta)
        base_sess = _base_graph(graph, loaded, ex, tmp / BASE_FILE, opset, real_data, meta)
        # Latency of one session.run (1 thread, rows of max_len items, mixed tenants; feed excluded).
        feeds = _latency_feeds(graph, ex, max_len)
        meta["latency"] = {"protocol": "ORT CPU, intra_op_num_threads=1, histories of max_seq_len, median of 20",
                           "fp32": latency_ms(sess, feeds[0]), "base": latency_ms(base_sess, feeds[1])}
        if quantize:
            _int8_graphs(tmp, graph, ex, (sess, base_sess), feeds, real_data, meta)
        meta["export_s"] = time.perf_counter() - t_start
    return Path(out_dir)
