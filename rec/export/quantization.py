"""int8 dynamic quantization of an exported graph, measured against its fp32 source.

Every MatMul/Gemm with a constant weight and the position-embedding Gather get int8 weights (ORT
``quantize_dynamic`` after ``quant_pre_process``); the result is slimmed. Quality is measured and
recorded by the export recipes, not gated: it is a trade-off for the operator.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rec.export.graph_surgery import slim
from rec.export.parity import ParityData, chunks, ndcg_at_k, run_parity
from rec.serving.runtime import make_session
from rec.export.serving_graph import ServingGraph

__all__ = ["quantize", "quantize_measured", "PER_CHANNEL_MIN_GAIN", "QUANT_OPS"]


#: per-channel weight scales cost a scale and a zero point per output channel (~5 % of the int8
#: file at d_model 64): used only where they cut the error against fp32 by at least this fraction.
PER_CHANNEL_MIN_GAIN = 0.10


#: what int8 dynamic quantization quantizes: projections (MatMul in the per-row graph, Gemm in the
#: base graph) and the position-embedding table (Gather)
QUANT_OPS = ["MatMul", "Gemm", "Gather"]


def quantize(src: Path, dst: Path, pick) -> dict[str, Any]:  # noqa: ANN001 - pick: Path -> error
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


def quantize_measured(src: Path, dst: Path, ref_sess, graph: ServingGraph, max_len: int, batches: list,
                      real_data: ParityData | None) -> tuple[dict[str, Any], dict[str, Any], Any]:  # noqa: ANN001
    """:func:`quantize` ``src`` (a graph whose session is ``ref_sess``) into ``dst`` and measure it.

    Returns ``(quantization info, quality, int8 session)``. Quality: random rows against torch; on
    real rows top-10 overlap and NDCG@10 against the fp32 graph it quantizes. Recorded, not gated.
    """
    def err(path: Path) -> float:
        return run_parity(make_session(path, providers=["CPUExecutionProvider"]), graph, max_len, batches)["max_abs_diff_user"]

    info = quantize(src, dst, err)
    qs = make_session(dst, providers=["CPUExecutionProvider"])
    q = {"random_vs_torch": run_parity(qs, graph, max_len, batches)}
    if real_data is not None:
        q["real_vs_fp32"] = run_parity(qs, graph, max_len, list(chunks(real_data)), ref_session=ref_sess)
        nd32, nd8 = ndcg_at_k(ref_sess, graph, max_len, real_data), ndcg_at_k(qs, graph, max_len, real_data)
        q["real_ndcg@10"] = {"tenant": real_data.bundle.tenant, "users": len(real_data.targets),
                             "fp32": nd32, "int8": nd8, "delta": nd8 - nd32}
    return info, q, qs
