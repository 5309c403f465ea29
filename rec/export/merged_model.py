"""Recipe: one tenant as a self-contained ONNX model (the classic alternative to the shared graph).

    <out>/ model.onnx [+ model.int8.onnx], item_ids.json, manifest.json (kind=merged-tenant-model)

``items [B,T] int64, pad [B,T] bool -> scores [B,N]``: the adapter is applied the reference way
(``rec.export.tenant_bundle.load_adapted``: LoRA ``merge_and_unload``, the method's own ``load``
otherwise), and the tenant's catalog matrix (and item bias) are constants of the graph, so any
method serves this way, ``full`` included. Parity is checked on the tenant's own users.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rec.data.padding import PAD, left_pad
from rec.data.schema import Tenant
from rec.export.parity import compare_users, gate, latency_ms, merge_stats, parity_data_from_tenant
from rec.export.quantization import quantize as quantize_graph
from rec.serving.runtime import VARIANTS, make_session
from rec.export.serving_graph import MergedGraph
from rec.export.tenant_bundle import _catalog, load_adapted
from rec.export.tracing import io_spec, opset_of, torch_export
from rec.io.artifacts import artifact_writer
from rec.training.checkpoint import LoadedBackbone

__all__ = ["export_merged_tenant_model", "MERGED_KIND"]

MERGED_KIND = "merged-tenant-model"
OUTPUT = "scores"


def _histories(loaded: LoadedBackbone, tenant: Tenant, text_emb: np.ndarray, max_users: int) -> tuple[np.ndarray, np.ndarray]:
    """The tenant's users' leave-one-out histories as left-padded ``(rows [U,T], pad [U,T])``."""
    max_len = int(loaded.cfg.data.max_seq_len)
    data = parity_data_from_tenant(loaded, tenant, text_emb, max_users)
    rows = left_pad(data.histories, max_len)
    return rows, rows == PAD


def _trace(graph: MergedGraph, rows: np.ndarray, pad: np.ndarray, path: Path, opset: int | None) -> None:
    # Example for tracing: sizes >= 2 and distinct (B=3, T=min(7, max_len)), as torch.export specializes 0/1.
    max_len = rows.shape[1]
    ex_rows = torch.from_numpy(np.resize(rows, (3, max_len))[:, -7:].copy())
    ex_pad = torch.from_numpy(np.resize(pad, (3, max_len))[:, -7:].copy())
    ex_pad[:, -1] = False
    ex_rows[:, -1] = ex_rows[:, -1].clamp(min=0)
    Dim = torch.export.Dim
    b, t = Dim("batch", min=1, max=65536), Dim("seq", min=1, max=8192)
    torch_export(graph, (ex_rows, ex_pad), ({0: b, 1: t}, {0: b, 1: t}), ["items", "pad"], OUTPUT, path, opset)


def _check(session, graph: MergedGraph, rows: np.ndarray, pad: np.ndarray, ref_session=None) -> dict[str, float]:  # noqa: ANN001
    """``session`` against torch (or against ``ref_session``) on every history, 64 rows at a time."""
    parts = []
    for st in range(0, len(rows), 64):
        feed = {"items": rows[st:st + 64], "pad": pad[st:st + 64]}
        got = session.run([OUTPUT], feed)[0]
        if ref_session is None:
            with torch.no_grad():
                ref = graph(torch.from_numpy(feed["items"]), torch.from_numpy(feed["pad"])).numpy()
        else:
            ref = ref_session.run([OUTPUT], feed)[0]
        eye = np.eye(got.shape[1], dtype=np.float32)  # scores are already per item
        parts.append({**compare_users(got, ref, [eye] * len(got)), "max_abs_diff_user": float(np.abs(got - ref).max())})
    return merge_stats(parts)


def _int8(tmp: Path, graph: MergedGraph, rows: np.ndarray, pad: np.ndarray, sess, lat_feeds: dict,  # noqa: ANN001
          meta: dict[str, Any]) -> None:
    """int8 of the merged model, measured against fp32 (recorded, not gated)."""
    fp32, int8 = tmp / VARIANTS["fp32"], tmp / VARIANTS["int8"]

    def session(p: Path):  # noqa: ANN202
        return make_session(p, providers=["CPUExecutionProvider"])

    meta["quantization"] = quantize_graph(fp32, int8, lambda p: _check(session(p), graph, rows, pad)["max_abs_diff_user"])
    meta["parity"]["int8_vs_fp32"] = _check(session(int8), graph, rows, pad, sess)
    meta["sizes"]["model.int8.onnx"] = int8.stat().st_size
    meta["sizes"]["int8_ratio"] = int8.stat().st_size / fp32.stat().st_size
    meta["latency"]["int8"] = latency_ms(session(int8), lat_feeds, output=OUTPUT)


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
    """Export one tenant as a self-contained model (see module doc) at ``out_dir``.

    Raises:
        ExportError: Export/checker failure or fp32 parity failure (nothing is published).
        ArtifactError: Corrupt adapter, or one trained on another backbone or for another tenant.
    """
    t_start = time.perf_counter()
    method, adapted, amani = load_adapted(loaded, tenant, adapter_dir)
    catalog = torch.from_numpy(_catalog(adapted, loaded, tenant, np.asarray(text_emb, np.float32)))
    graph = MergedGraph(adapted, catalog).eval()
    rows, pad = _histories(loaded, tenant, text_emb, max_users)
    meta: dict[str, Any] = {
        "tenant": tenant.name, "method": method.name, "backbone_checksum": loaded.checksum,
        "adapter": {"path": None if adapter_dir is None else str(adapter_dir), "version": amani.get("version")},
        "num_items": int(catalog.shape[0]), "max_seq_len": rows.shape[1], "parity": {}, "sizes": {},
    }
    with artifact_writer(out_dir, kind=MERGED_KIND, meta=meta) as tmp:
        fp32 = tmp / VARIANTS["fp32"]
        _trace(graph, rows, pad, fp32, opset)
        sess = make_session(fp32, providers=["CPUExecutionProvider"])
        meta.update(io_spec(sess), opset=opset_of(fp32))
        meta["parity"]["fp32"] = _check(sess, graph, rows, pad)
        gate(meta["parity"]["fp32"], f"merged model of {tenant.name}")
        meta["sizes"]["model.onnx"] = fp32.stat().st_size
        lat_feeds = {n: {"items": np.resize(rows, (n, rows.shape[1])), "pad": np.resize(pad, (n, rows.shape[1]))} for n in (1, 32)}
        meta["latency"] = {"protocol": "ORT CPU, intra_op_num_threads=1, the tenant's histories, median of 20",
                           "fp32": latency_ms(sess, lat_feeds, output=OUTPUT)}
        if quantize:
            _int8(tmp, graph, rows, pad, sess, lat_feeds, meta)
        (tmp / "item_ids.json").write_text(json.dumps([str(i) for i in tenant.items.ids]))
        meta["export_s"] = time.perf_counter() - t_start
    return Path(out_dir)
