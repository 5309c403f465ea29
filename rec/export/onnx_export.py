"""Export the serving graphs to ONNX with the dynamo exporter, verified before publishing.

``export_serving_model`` writes the shared multi-tenant graph (``rec.export.serving_graph``)::

    <out>/
      model.onnx        fp32, one file (no external data), dynamic batch/seq/prompt/rank
      model.base.onnx   fp32, the same backbone without adapter inputs (``hist``, ``pad``): what
                        batches with no adapter tensor run (zero-shot and head tenants)
      model.int8.onnx   optional: ORT dynamic quantization (int8 weights) of model.onnx
      model.base.int8.onnx  with it: the same quantization of model.base.onnx
      manifest.json     kind=serving-model: opset, inputs/outputs (names, dtypes, symbolic shapes),
                        projections, backbone checksum, parity numbers, sizes, file checksums

``export_merged_tenant_model`` writes the classic alternative, one self-contained model per tenant
(adapter merged with PEFT ``merge_and_unload``, catalog baked in; any method, ``full`` included)::

    <out>/ model.onnx [+ model.int8.onnx], item_ids.json, manifest.json (kind=merged-tenant-model)

Why dynamo: the legacy TorchScript exporter hard-codes sequence lengths (FIELD-NOTES). Every
export is checked with ``onnx.checker`` and run in ONNX Runtime against the torch module on
random and (when given) real inputs; the fp32 model is refused (nothing is published) unless
max |diff| <= 1e-4 and every row's top-10 is identical (up to swaps of float ties,
``parity.same_topk``). int8 quality (top-10 overlap, NDCG@10
delta on real data) is measured and recorded, not gated: it is a trade-off for the operator.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rec.data.schema import Tenant
from rec.export.errors import ExportError
from rec.export.parity import (
    PARITY_ATOL,
    ParityData,
    chunks,
    compare_users,
    gate,
    latency_ms,
    merge_stats,
    ndcg_at_k,
    parity_data_from_tenant,
    random_batch,
    random_bundles,
    run_parity,
    structural_checks,
)
from rec.export.runtime import BASE_FILE, BASE_INPUTS, BASE_VARIANTS, SERVING_KIND, VARIANTS, build_feed, make_session
from rec.export.serving_graph import OUTPUT_NAME, BaseGraph, MergedGraph, ServingGraph
from rec.export.tenant_bundle import _catalog, load_adapted
from rec.io.artifacts import artifact_writer
from rec.training.checkpoint import LoadedBackbone

__all__ = [
    "export_serving_model",
    "export_merged_tenant_model",
    "slim",
    "ParityData",
    "parity_data_from_tenant",
    "compare_users",
    "MERGED_KIND",
    "PARITY_ATOL",
]

MERGED_KIND = "merged-tenant-model"


# --- ONNX plumbing -------------------------------------------------------------------------------
def _torch_export(module: torch.nn.Module, args: tuple, dynamic_shapes: tuple, names: list[str], output: str,
                  path: Path, opset: int | None) -> None:
    import onnx

    kwargs: dict[str, Any] = dict(
        dynamo=True, dynamic_shapes=dynamic_shapes, input_names=names, output_names=[output],
        external_data=False, optimize=True, verbose=False,
    )
    if opset is not None:
        kwargs["opset_version"] = opset
    try:
        program = torch.onnx.export(module, args, **kwargs)
        onnx.save_model(slim(program.model_proto), str(path))
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # noqa: BLE001 - exporter/checker failures become one clear error
        raise ExportError(f"ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e


def slim(model):  # noqa: ANN001, ANN201 - onnx.ModelProto in and out (modified in place)
    """Drop what ONNX Runtime never reads: debug annotations, shape hints, names of intermediates.

    The exporter annotates the graph, its inputs and every node with torch stack traces, FX node
    names and the export signature (``metadata_props``), and shape inference (run again by the
    quantizer) stores a ``value_info`` entry per intermediate tensor. None of it changes what the
    model computes; at d_model 64 it was 12 % of the int8 file. Nodes lose their names and every
    tensor but the graph's inputs and outputs gets a short one (weights ``w0``, ``w1``, ...,
    intermediates ``t0``, ...): names are a fixed cost per tensor, 4 % of the int8 file at
    d_model 64 (the exporter already names most weights ``val_<n>``, not by module). Initializers
    no node reads are removed, and so are opset imports no node uses. The graph has no subgraphs
    (checked).
    """
    g = model.graph
    if any(att.HasField("g") or len(att.graphs) for node in g.node for att in node.attribute):
        raise ExportError("slim() does not rename inside subgraphs (If/Loop); the serving graphs have none")
    del g.value_info[:]
    del g.metadata_props[:]
    del model.metadata_props[:]
    for item in (*g.input, *g.output, *g.initializer, *g.node):
        del item.metadata_props[:]
        item.doc_string = ""
    keep = {v.name for v in (*g.input, *g.output)}
    short = {w.name: f"w{i}" for i, w in enumerate(g.initializer) if w.name not in keep}
    for w in g.initializer:
        w.name = short.get(w.name, w.name)
    n_weights = len(short)
    for node in g.node:
        node.name = ""
        for o in node.output:
            if o and o not in keep:
                short.setdefault(o, f"t{len(short) - n_weights}")
    for node in g.node:
        for names in (node.input, node.output):
            for j, n in enumerate(names):
                if n in short:
                    names[j] = short[n]
    used = {i for node in g.node for i in node.input} | {o.name for o in g.output}
    weights = [w for w in g.initializer if w.name in used]
    del g.initializer[:]
    g.initializer.extend(weights)
    domains = {node.domain for node in g.node} | {""}  # the quantizer imports 8 domains it does not use
    opsets = [o for o in model.opset_import if o.domain in domains or (o.domain == "ai.onnx" and "" in domains)]
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    return model


def _quantize_measured(src: Path, dst: Path, ref_sess, graph: ServingGraph, max_len: int, batches: list,
                       real_data: ParityData | None) -> tuple[dict[str, Any], dict[str, Any], Any]:  # noqa: ANN001
    """:func:`_quantize` ``src`` (a graph whose session is ``ref_sess``) into ``dst`` and measure it.

    Returns ``(quantization info, quality, int8 session)``. Quality: random rows against torch; on
    real rows top-10 overlap and NDCG@10 against the fp32 graph it quantizes. Recorded, not gated.
    """
    def err(path: Path) -> float:
        return run_parity(make_session(path, providers=["CPUExecutionProvider"]), graph, max_len, batches)["max_abs_diff_user"]

    info = _quantize(src, dst, err)
    qs = make_session(dst, providers=["CPUExecutionProvider"])
    q = {"random_vs_torch": run_parity(qs, graph, max_len, batches)}
    if real_data is not None:
        q["real_vs_fp32"] = run_parity(qs, graph, max_len, list(chunks(real_data)), ref_session=ref_sess)
        nd32, nd8 = ndcg_at_k(ref_sess, graph, max_len, real_data), ndcg_at_k(qs, graph, max_len, real_data)
        q["real_ndcg@10"] = {"tenant": real_data.bundle.tenant, "users": len(real_data.targets),
                             "fp32": nd32, "int8": nd8, "delta": nd8 - nd32}
    return info, q, qs


#: per-channel weight scales cost a scale and a zero point per output channel (~5 % of the int8
#: file at d_model 64): used only where they cut the error against fp32 by at least this fraction.
PER_CHANNEL_MIN_GAIN = 0.10


#: what int8 dynamic quantization quantizes: projections (MatMul in the per-row graph, Gemm in the
#: base graph) and the position-embedding table (Gather)
QUANT_OPS = ["MatMul", "Gemm", "Gather"]


def _quantize(src: Path, dst: Path, pick) -> dict[str, Any]:  # noqa: ANN001 - pick: Path -> error
    """int8 dynamic quantization (``quant_pre_process`` then ``quantize_dynamic``), then :func:`slim`.

    Every MatMul/Gemm with a constant weight and the position-embedding Gather get int8 weights;
    the per-row LoRA products (both sides are inputs) stay fp32. Per-tensor and per-channel scales
    are both tried; ``pick(path)`` measures each one's error against fp32, and per-channel is
    kept only if it lowers that error by :data:`PER_CHANNEL_MIN_GAIN` ("per-channel where it helps").
    """
    import onnx
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="rec-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre))
        except Exception:  # noqa: BLE001 - symbolic shape inference may not follow every op
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        errs, sizes = {}, {}
        for per_channel in (False, True):
            out = Path(tmp) / f"q{int(per_channel)}.onnx"
            quantize_dynamic(str(pre), str(out), per_channel=per_channel, weight_type=QuantType.QInt8,
                             op_types_to_quantize=QUANT_OPS)
            onnx.save_model(slim(onnx.load(str(out))), str(out))
            onnx.checker.check_model(str(out))
            errs[per_channel], sizes[per_channel] = pick(out), out.stat().st_size
        best = errs[True] <= (1 - PER_CHANNEL_MIN_GAIN) * errs[False]
        dst.write_bytes((Path(tmp) / f"q{int(best)}.onnx").read_bytes())
    return {"method": "onnxruntime.quantize_dynamic", "weight_type": "QInt8", "op_types": QUANT_OPS,
            "per_channel": best, "pre_process": True, "slim": True,
            "max_abs_diff_user_by_per_channel": {str(k): v for k, v in errs.items()},
            "bytes_by_per_channel": {str(k): v for k, v in sizes.items()}}


def _io_spec(session) -> dict[str, list[dict[str, Any]]]:  # noqa: ANN001
    def spec(v) -> dict[str, Any]:  # noqa: ANN001
        return {"name": v.name, "dtype": v.type, "shape": list(v.shape)}

    return {"inputs": [spec(v) for v in session.get_inputs()], "outputs": [spec(v) for v in session.get_outputs()]}


def _opset(path: Path) -> int:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return int(next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")))


# --- public API ----------------------------------------------------------------------------------
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
    rng = np.random.default_rng(seed)
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
    meta: dict[str, Any] = {
        "backbone_checksum": loaded.checksum,
        "text_model": loaded.manifest.get("text_model"),
        "d_model": int(loaded.model.d_model),
        "max_seq_len": max_len,
        "temperature": float(loaded.model.temperature),
        "projections": [list(x) for x in graph.projections],
        "dynamic_dims": {"batch": [1, 65536], "seq": [1, 8192], "prompt_len": [0, 1024], "rank": [1, 1024]},
        "parity": {},
        "sizes": {},
    }
    with artifact_writer(out_dir, kind=SERVING_KIND, meta=meta) as tmp:
        fp32 = tmp / VARIANTS["fp32"]
        _torch_export(graph, args, dynamic, graph.input_names, OUTPUT_NAME, fp32, opset)
        sess = make_session(fp32, providers=["CPUExecutionProvider"])
        meta.update(_io_spec(sess), opset=_opset(fp32))
        par = {"random": run_parity(sess, graph, max_len, batches)}
        gate(par["random"], "fp32 serving model, random inputs")
        par.update(structural_checks(sess, graph, max_len, bundles, loaded))
        if real_data is not None:
            par["real"] = run_parity(sess, graph, max_len, list(chunks(real_data)))
            par["real"]["tenant"] = real_data.bundle.tenant
            gate(par["real"], f"fp32 serving model, real inputs of {real_data.bundle.tenant}")
        meta["parity"]["fp32"] = par
        meta["sizes"]["model.onnx"] = fp32.stat().st_size
        base_sess = _export_base_graph(loaded, tmp / BASE_FILE, args, dynamic, opset)
        meta["parity"]["base"] = {"random": run_parity(base_sess, graph, max_len, batches_base)}
        gate(meta["parity"]["base"]["random"], "base serving model (no adapter inputs), random inputs")
        if real_data is not None:
            meta["parity"]["base"]["real"] = run_parity(base_sess, graph, max_len, list(chunks(real_data)))
            gate(meta["parity"]["base"]["real"], f"base serving model, real inputs of {real_data.bundle.tenant}")
        meta["sizes"][BASE_FILE] = (tmp / BASE_FILE).stat().st_size
        meta["base_graph"] = {"file": BASE_FILE, "inputs": list(BASE_INPUTS)}
        # Latency of one session.run (1 thread, rows of max_len items, mixed tenants; feed excluded).
        lat_feeds = {n: build_feed(*random_batch(bundles, max_len, np.random.default_rng(n), rows=n, lengths=max_len),
                                   graph.projections, max_len).inputs for n in (1, 32)}
        base_feeds = {}
        for n in (1, 32):
            feed = build_feed(*random_batch(bundles[:1], max_len, np.random.default_rng(n), rows=n, lengths=max_len), [], max_len)
            base_feeds[n] = {k: feed.inputs[k] for k in BASE_INPUTS}
        meta["latency"] = {"protocol": "ORT CPU, intra_op_num_threads=1, histories of max_seq_len, median of 20",
                           "fp32": latency_ms(sess, lat_feeds), "base": latency_ms(base_sess, base_feeds)}
        if quantize:
            int8 = tmp / VARIANTS["int8"]
            meta["quantization"], meta["parity"]["int8"], qs = _quantize_measured(fp32, int8, sess, graph, max_len, batches, real_data)
            meta["sizes"]["model.int8.onnx"] = int8.stat().st_size
            meta["sizes"]["int8_ratio"] = int8.stat().st_size / fp32.stat().st_size
            meta["latency"]["int8"] = latency_ms(qs, lat_feeds)
            base8 = tmp / BASE_VARIANTS["int8"]  # the base graph too, measured against the fp32 base graph
            meta["quantization_base"], meta["parity"]["base_int8"], bq = _quantize_measured(
                tmp / BASE_FILE, base8, base_sess, graph, max_len, batches_base, real_data)
            meta["sizes"][base8.name] = base8.stat().st_size
            meta["base_graph"]["int8_file"] = base8.name
            meta["latency"]["base_int8"] = latency_ms(bq, base_feeds)
        meta["export_s"] = time.perf_counter() - t_start
    return Path(out_dir)


def _export_base_graph(loaded: LoadedBackbone, path: Path, args: tuple, dynamic: tuple, opset: int | None):  # noqa: ANN202
    """Export :class:`BaseGraph` (the serving graph's first two inputs and dims) to ``path``; its session."""
    _torch_export(BaseGraph(loaded.model).eval(), args[:2], dynamic[:2], list(BASE_INPUTS), OUTPUT_NAME, path, opset)
    return make_session(path, providers=["CPUExecutionProvider"])


def export_merged_tenant_model(
    loaded: LoadedBackbone,
    tenant: Tenant,
    text_emb: np.ndarray,
    adapter_dir: str | Path | None,
    out_dir: str | Path,
    *,
    opset: int | None = None,
    quantize: bool = False,
    max_users: int = 256,
) -> Path:
    """Export one tenant as a self-contained model: ``items [B,T] int64, pad [B,T] bool -> scores [B,N]``.

    The adapter is applied the reference way (``load_adapter``: LoRA ``merge_and_unload``, prompt
    as a constant, head/full weights loaded), and the tenant's catalog matrix is a constant of
    the graph. Parity is checked on the tenant's own users (leave-one-out histories).
    """
    import json

    t_start = time.perf_counter()
    method, adapted, amani = load_adapted(loaded, tenant, adapter_dir)
    catalog = torch.from_numpy(_catalog(adapted, loaded, tenant, np.asarray(text_emb, np.float32)))
    graph = MergedGraph(adapted, catalog).eval()
    max_len = int(loaded.cfg.data.max_seq_len)
    data = parity_data_from_tenant(loaded, tenant, text_emb, max_users)
    rows = np.full((len(data.histories), max_len), -1, np.int64)
    for i, h in enumerate(data.histories):
        h = h[-max_len:]
        rows[i, max_len - len(h):] = h
    pad = rows < 0
    # Example for tracing: sizes >= 2 and distinct (B=3, T=min(7, max_len)), as torch.export specializes 0/1.
    ex_rows = torch.from_numpy(np.resize(rows, (3, max_len))[:, -7:].copy())
    ex_pad = torch.from_numpy(np.resize(pad, (3, max_len))[:, -7:].copy())
    ex_pad[:, -1] = False
    ex_rows[:, -1] = ex_rows[:, -1].clamp(min=0)
    Dim = torch.export.Dim
    b, t = Dim("batch", min=1, max=65536), Dim("seq", min=1, max=8192)
    names = ["items", "pad"]
    meta: dict[str, Any] = {
        "tenant": tenant.name, "method": method.name, "backbone_checksum": loaded.checksum,
        "adapter": {"path": None if adapter_dir is None else str(adapter_dir), "version": amani.get("version")},
        "num_items": int(catalog.shape[0]), "max_seq_len": max_len, "parity": {}, "sizes": {},
    }
    with artifact_writer(out_dir, kind=MERGED_KIND, meta=meta) as tmp:
        fp32 = tmp / VARIANTS["fp32"]
        _torch_export(graph, (ex_rows, ex_pad), ({0: b, 1: t}, {0: b, 1: t}), names, "scores", fp32, opset)
        sess = make_session(fp32, providers=["CPUExecutionProvider"])
        meta.update(_io_spec(sess), opset=_opset(fp32))

        def check(s, ref_sess=None) -> dict[str, float]:  # noqa: ANN001
            parts = []
            for st in range(0, len(rows), 64):
                feed = {"items": rows[st:st + 64], "pad": pad[st:st + 64]}
                got = s.run(["scores"], feed)[0]
                if ref_sess is None:
                    with torch.no_grad():
                        ref = graph(torch.from_numpy(feed["items"]), torch.from_numpy(feed["pad"])).numpy()
                else:
                    ref = ref_sess.run(["scores"], feed)[0]
                eye = np.eye(got.shape[1], dtype=np.float32)  # scores are already per item
                parts.append({**compare_users(got, ref, [eye] * len(got)), "max_abs_diff_user": float(np.abs(got - ref).max())})
            return merge_stats(parts)

        meta["parity"]["fp32"] = check(sess)
        gate(meta["parity"]["fp32"], f"merged model of {tenant.name}")
        meta["sizes"]["model.onnx"] = fp32.stat().st_size
        lat_feeds = {n: {"items": np.resize(rows, (n, max_len)), "pad": np.resize(pad, (n, max_len))} for n in (1, 32)}
        meta["latency"] = {"protocol": "ORT CPU, intra_op_num_threads=1, the tenant's histories, median of 20",
                           "fp32": latency_ms(sess, lat_feeds, output="scores")}
        if quantize:
            int8 = tmp / VARIANTS["int8"]
            meta["quantization"] = _quantize(fp32, int8, lambda p: check(make_session(p, providers=["CPUExecutionProvider"]))["max_abs_diff_user"])
            meta["parity"]["int8_vs_fp32"] = check(make_session(int8, providers=["CPUExecutionProvider"]), sess)
            meta["sizes"]["model.int8.onnx"] = int8.stat().st_size
            meta["sizes"]["int8_ratio"] = int8.stat().st_size / fp32.stat().st_size
            meta["latency"]["int8"] = latency_ms(make_session(int8, providers=["CPUExecutionProvider"]), lat_feeds, output="scores")
        (tmp / "item_ids.json").write_text(json.dumps([str(i) for i in tenant.items.ids]))
        meta["export_s"] = time.perf_counter() - t_start
    return Path(out_dir)
