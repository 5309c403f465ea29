"""Compression benchmark: size, quality and latency of the serving model variants.

A text backbone is pretrained (Ray Train, cached under ``--runs``) on one dataset; its encoder is
then served as:

    torch-fp32           the same serving computation in torch eager: ``ServingGraph`` (the module
                         that is exported) on the same feed, 1 thread, ``inference_mode``
    ort-fp32             the shared ONNX graph (rec export) in ONNX Runtime
    ort-int8             ORT dynamic int8 weights + int8 catalog (per-row scales)
    pruned-magnitude-50  50 % global L1 unstructured pruning + short recovery fine-tune
    pruned-ffn-50        half the FFN hidden units removed (structured) + short recovery fine-tune
    student              a 1-block student (layer dropping) distilled from the teacher (CE + KD)
    student-int8         the student, int8
    ort-merged           the classic alternative: one merged per-tenant model, catalog in the graph

Quality: NDCG@10 of every user's last item (full ranking over the catalog, leave-one-out test,
history not excluded) computed through each variant's serving path; top10_overlap = mean
overlap of each user's top-10 with torch-fp32's. Latency: one request = user vectors for a
batch (feed building + one ``session.run`` / one eager forward) + top-10 per row, 1 thread, real
histories of the test users; all variants are timed in one spawned process in interleaved rounds;
``peak_rss_mb`` is the VmHWM of a fresh spawned process per variant. size_bytes = the ONNX file
(torch-fp32: the checkpoint's weights file); catalog_bytes = the tenant's stored catalog matrix.
The issue-4 targets are computed from the rows and written as ``targets`` in the JSON.

Usage::

    python bench/compression.py --quick     # pipeline check (~3 min)
    python bench/compression.py             # the recorded run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make `bench` and `rec` importable
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench._results import RESULTS, write_results  # noqa: E402
from rec.io.artifacts import atomic_write_bytes  # noqa: E402

COLUMNS = ["variant", "size_bytes", "catalog_bytes", "ndcg@10", "top10_overlap", "p50_ms_b1", "p50_ms_b32",
           "p50_ms_b256", "p99_ms_b32", "peak_rss_mb"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pretrain_config(args: argparse.Namespace):  # noqa: ANN201
    from rec.config import load_config

    ov = {
        "data.sources": f"[{{format: movielens-100k, path: {args.datasets / 'ml-100k'}}}]",
        "data.max_seq_len": 50, "model.max_len": 50, "model.d_model": 64, "model.n_layers": 2, "model.n_heads": 2,
        "train.epochs": 2 if args.quick else 12, "train.patience": 2, "train.lr": 0.002, "train.batch_size": 128,
        "train.torch_threads": 2, "train.max_eval_users": 2000,
    }
    key = hashlib.sha256(json.dumps(ov, sort_keys=True).encode()).hexdigest()[:10]
    ov["train.output_dir"] = str(args.runs / f"backbone-{key}")
    return load_config(None, [f"{k}={v}" for k, v in ov.items()])


def get_backbone(args: argparse.Namespace):  # noqa: ANN201
    """``(loaded backbone, config, checkpoint folder)``; pretrains (cached under ``--runs``) if needed."""
    from rec.io.artifacts import ArtifactError
    from rec.training.checkpoint import load_backbone

    cfg = pretrain_config(args)
    ckpt = Path(cfg.train.output_dir) / "checkpoint"
    try:
        return load_backbone(ckpt), cfg, ckpt
    except ArtifactError:
        pass
    from rec.config import RayConfig
    from rec.ray_session import ray_session
    from rec.training.ray_train import pretrain

    log(f"pretraining the backbone -> {ckpt}")
    with ray_session(RayConfig(num_cpus=2)):
        res = pretrain(cfg, progress=True)
    return load_backbone(res.checkpoint), cfg, Path(res.checkpoint)


def with_model(loaded, model, tag: str):  # noqa: ANN001, ANN201
    """A LoadedBackbone-like object around an in-memory (compressed) encoder."""
    from rec.training.checkpoint import LoadedBackbone

    h = hashlib.sha256(tag.encode())
    for v in model.state_dict().values():
        h.update(v.detach().cpu().numpy().tobytes())
    return LoadedBackbone(model.eval(), loaded.cfg, loaded.tenants, loaded.manifest, h.hexdigest())


# --- measurement in fresh processes ---------------------------------------------------------------
def torch_user_vectors(checkpoint: str | Path, threads: int = 1):  # noqa: ANN201
    """Torch-eager twin of ``SharedRanker.user_vectors``: same feed, ``ServingGraph`` run eagerly.

    ``ServingGraph`` is the module ``rec export`` traces, so this is the serving computation
    (zero LoRA inputs and all) with only the runtime changed. Returns ``fn(histories, bundles)``.
    """
    import torch

    from rec.export.runtime import build_feed
    from rec.export.serving_graph import ServingGraph
    from rec.training.checkpoint import load_backbone

    torch.set_num_threads(threads)
    loaded = load_backbone(checkpoint)
    graph = ServingGraph(loaded.model).eval()
    max_len = int(loaded.cfg.data.max_seq_len)

    def user_vectors(histories: list[np.ndarray], bundles: list) -> np.ndarray:  # noqa: ANN001
        feed = build_feed(histories, bundles, graph.projections, max_len)
        with torch.inference_mode():
            return graph(*(torch.from_numpy(feed.inputs[n]) for n in graph.input_names)).numpy()

    return user_vectors


def _requester(spec: dict[str, Any]):  # noqa: ANN202
    """A function serving one request (a list of histories) with the variant described by ``spec``."""
    from rec.export.runtime import SharedRanker, make_session
    from rec.export.tenant_bundle import load_tenant_bundle

    if spec["kind"] == "torch":
        user_vectors = torch_user_vectors(spec["checkpoint"], threads=1)
        bundle = load_tenant_bundle(spec["bundle"])

        def request(rows: list[np.ndarray]) -> None:
            users = user_vectors(rows, [bundle] * len(rows))
            for u in users:
                SharedRanker.top_k(bundle, u, 10)

        return request
    if spec["kind"] == "shared":
        ranker = SharedRanker(spec["model_dir"], intra_op_threads=1, variant=spec["variant"])
        bundle = load_tenant_bundle(spec["bundle"])

        def request(rows: list[np.ndarray]) -> None:
            users = ranker.user_vectors(rows, [bundle] * len(rows))
            for u in users:
                ranker.top_k(bundle, u, 10)

        return request
    sess = make_session(Path(spec["model_dir"]) / "model.onnx")
    max_len = spec["max_len"]

    def request(rows: list[np.ndarray]) -> None:
        items = np.full((len(rows), max_len), -1, np.int64)
        for i, h in enumerate(rows):
            h = h[-max_len:]
            items[i, max_len - len(h):] = h
        scores = sess.run(["scores"], {"items": items, "pad": items < 0})[0]
        np.argpartition(-scores, 10, axis=1)[:, :10]

    return request


def _batches(hists: list[np.ndarray], b: int, n: int) -> list[list[np.ndarray]]:
    return [[hists[(s * b + i) % len(hists)] for i in range(b)] for s in range(n)]


def _latency(specs: dict[str, dict[str, Any]], histories: list[list[int]], reps: dict[str, int], rounds: int) -> dict[str, dict]:
    """Spawned: all variants in one process, timed in interleaved rounds (shared-CPU noise hits all alike)."""
    hists = [np.asarray(h, np.int64) for h in histories]
    reqs = {name: _requester(spec) for name, spec in specs.items()}
    times: dict[str, dict[int, list[float]]] = {n: {1: [], 32: [], 256: []} for n in reqs}
    for r in range(rounds):
        for b in (1, 32, 256):
            batches = _batches(hists, b, reps[str(b)])
            for name, req in reqs.items():
                req(batches[0])  # warm-up
                for rows in batches:
                    t0 = time.perf_counter()
                    req(rows)
                    times[name][b].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for name, t in times.items():
        out[name] = {f"p50_ms_b{b}": float(np.percentile(t[b], 50)) for b in (1, 32, 256)}
        out[name]["p99_ms_b32"] = float(np.percentile(t[32], 99))
    return out


def _peak_rss(spec: dict[str, Any], histories: list[list[int]]) -> float:
    """Spawned: load one variant, serve a few batches of each size, return this process's VmHWM (MiB).

    VmHWM belongs to the process's own address space (reset at exec), unlike ru_maxrss, which a
    spawned child inherits from the parent it was forked from.
    """
    hists = [np.asarray(h, np.int64) for h in histories]
    req = _requester(spec)
    for b in (1, 32, 256):
        for rows in _batches(hists, b, 3):
            req(rows)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")


def in_fresh_process(fn, *args):  # noqa: ANN001, ANN201
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


# --- quality ---------------------------------------------------------------------------------------
def serving_topk(model_dir: Path, variant: str, bundle_dir: Path, hists: list[np.ndarray]) -> np.ndarray:
    from rec.export.runtime import SharedRanker
    from rec.export.tenant_bundle import load_tenant_bundle

    ranker, bundle = SharedRanker(model_dir, variant=variant), load_tenant_bundle(bundle_dir)
    scores = np.concatenate([ranker.user_vectors(hists[s:s + 256], [bundle] * len(hists[s:s + 256])) @ bundle.catalog.T
                             for s in range(0, len(hists), 256)])
    return scores


def quality(scores: np.ndarray, targets: np.ndarray, ref_top: np.ndarray | None) -> tuple[float, float, np.ndarray]:
    from rec.metrics import metrics_from_ranks, rank_of_target

    ndcg = metrics_from_ranks(rank_of_target(scores, targets), ks=[10])["ndcg@10"]
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    overlap = 1.0 if ref_top is None else float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, ref_top)]))
    return float(ndcg), overlap, top


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 pretraining epochs, 1 recovery epoch, fewer timing reps")
    p.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-compression")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    import torch

    from rec.compression import DistillLoss, ffn_prune, magnitude_prune, make_permanent, make_student, recover, sparsity
    from rec.export.onnx_export import export_merged_tenant_model, export_serving_model, parity_data_from_tenant
    from rec.export.tenant_bundle import export_tenant_bundle
    from rec.io.artifacts import read_manifest
    from rec.text import encode_items
    from rec.training.corpus import build_corpus, load_tenants

    torch.set_num_threads(2)
    t_start = time.perf_counter()
    loaded, cfg, ckpt = get_backbone(args)
    tenant = load_tenants(cfg.data)[0]
    emb = encode_items(list(tenant.items.text), loaded.cfg.text)
    corpus = build_corpus(loaded.cfg, [tenant])
    seqs = [tenant.sequence(u) for u in range(tenant.num_users)]
    hists, targets = [s[:-1] for s in seqs], np.array([s[-1] for s in seqs], np.int64)
    real = parity_data_from_tenant(loaded, tenant, emb, max_users=256)
    out = args.runs / "variants"
    rec_epochs = 1 if args.quick else 3

    log("compressing")
    teacher = loaded.model
    mag = magnitude_prune(teacher, 0.5)
    recover(mag, corpus, epochs=rec_epochs)
    make_permanent(mag)
    ffn = ffn_prune(teacher, 0.5)
    recover(ffn, corpus, epochs=rec_epochs)
    student = make_student(teacher, [len(teacher.blocks) - 1])
    recover(student, corpus, loss_model=DistillLoss(student, teacher, alpha=0.5, tau=2.0), epochs=2 * rec_epochs)
    # export folder names (the artifacts) -> row names follow the issue's variant names
    encoders = {"fp32": (loaded, True), "magnitude-50": (with_model(loaded, mag, "mag50"), False),
                "ffn-50": (with_model(loaded, ffn, "ffn50"), False), "distill-1L": (with_model(loaded, student, "distill1"), True)}

    log("exporting")
    dirs: dict[str, Path] = {}
    for name, (lb, q) in encoders.items():
        dirs[name] = export_serving_model(lb, out / name, quantize=q, real_data=real)
    bundles = {dt: export_tenant_bundle(loaded, tenant, emb, None, out / f"bundle-{dt}", catalog_dtype=dt) for dt in ("fp32", "int8")}
    merged = export_merged_tenant_model(loaded, tenant, emb, None, out / "merged")

    variants = [  # (row name, model dir, ORT variant, catalog dtype)
        ("ort-fp32", dirs["fp32"], "fp32", "fp32"),
        ("ort-int8", dirs["fp32"], "int8", "int8"),
        ("pruned-magnitude-50", dirs["magnitude-50"], "fp32", "fp32"),
        ("pruned-ffn-50", dirs["ffn-50"], "fp32", "fp32"),
        ("student", dirs["distill-1L"], "fp32", "fp32"),
        ("student-int8", dirs["distill-1L"], "int8", "int8"),
    ]
    reps = {"1": 20 if args.quick else 40, "32": 10 if args.quick else 20, "256": 2 if args.quick else 4}
    rounds = 2 if args.quick else 8
    specs: dict[str, dict[str, Any]] = {}

    log("quality of torch-fp32")  # the reference: the trained model in torch eager, as exported
    import safetensors.torch

    from rec.export.serving_graph import ServingGraph
    from rec.export.tenant_bundle import load_tenant_bundle

    eager, fp32_bundle = torch_user_vectors(ckpt, threads=2), load_tenant_bundle(bundles["fp32"])
    scores = np.concatenate([eager(hists[s:s + 256], [fp32_bundle] * len(hists[s:s + 256])) @ fp32_bundle.catalog.T
                             for s in range(0, len(hists), 256)])
    ndcg, overlap, ref_top = quality(scores, targets, None)
    specs["torch-fp32"] = {"kind": "torch", "checkpoint": str(ckpt), "bundle": str(bundles["fp32"])}
    rows = [{"variant": "torch-fp32", "size_bytes": len(safetensors.torch.save(ServingGraph(loaded.model).state_dict())),
             "catalog_bytes": read_manifest(bundles["fp32"])["files"]["catalog.safetensors"]["bytes"],
             "ndcg@10": ndcg, "top10_overlap": overlap}]
    for name, mdir, var, cdt in variants:
        log(f"quality of {name}")
        ndcg, overlap, _ = quality(serving_topk(mdir, var, bundles[cdt], hists), targets, ref_top)
        m = read_manifest(mdir)
        specs[name] = {"kind": "shared", "model_dir": str(mdir), "variant": var, "bundle": str(bundles[cdt])}
        fname = "model.onnx" if var == "fp32" else "model.int8.onnx"
        rows.append({"variant": name, "size_bytes": m["files"][fname]["bytes"],
                     "catalog_bytes": read_manifest(bundles[cdt])["files"]["catalog.safetensors"]["bytes"],
                     "ndcg@10": ndcg, "top10_overlap": overlap})
    from rec.export.runtime import make_session

    sess = make_session(merged / "model.onnx")
    max_len = loaded.cfg.data.max_seq_len
    scores = []
    for s in range(0, len(hists), 256):
        chunk = hists[s:s + 256]
        items = np.full((len(chunk), max_len), -1, np.int64)
        for i, h in enumerate(chunk):
            h = h[-max_len:]
            items[i, max_len - len(h):] = h
        scores.append(sess.run(["scores"], {"items": items, "pad": items < 0})[0])
    ndcg, overlap, _ = quality(np.concatenate(scores), targets, ref_top)
    specs["ort-merged"] = {"kind": "merged", "model_dir": str(merged), "max_len": max_len}
    rows.append({"variant": "ort-merged", "size_bytes": read_manifest(merged)["files"]["model.onnx"]["bytes"], "catalog_bytes": 0,
                 "ndcg@10": ndcg, "top10_overlap": overlap})
    plain = [h.tolist() for h in hists]
    log(f"latency: {rounds} interleaved rounds over {len(specs)} variants")
    lat = in_fresh_process(_latency, specs, plain, reps, rounds)
    for r in rows:
        log(f"peak RSS of {r['variant']}")
        r.update(lat[r["variant"]], peak_rss_mb=in_fresh_process(_peak_rss, specs[r["variant"]], plain))

    protocol = {
        "dataset": f"ml-100k ({tenant.num_users} users, {tenant.num_items} items); backbone d_model=64, 2 blocks, "
                   f"max_seq_len={max_len}, text-only (MiniLM), pretrained with rec pretrain (Ray Train, 1 worker)",
        "quality": "NDCG@10 of each user's last item, full ranking, history not excluded, through each variant's "
                   "serving path (torch eager or ONNX Runtime); top10_overlap vs torch-fp32",
        "latency": "one request = user vectors (feed + one ORT run, or one torch eager forward of the same ServingGraph "
                   "on the same feed under inference_mode) + top-10 per row in numpy; ORT CPU intra_op_num_threads=1, "
                   f"torch.set_num_threads(1); all variants in one spawned process, {rounds} interleaved rounds x {reps} "
                   "requests per batch size (the CPU is shared with other jobs: interleaving spreads their noise over "
                   "every variant)",
        "peak_rss_mb": "VmHWM of a fresh spawned process that loads only that variant (+ its tenant bundle) and serves "
                       "3 requests per batch size: python + numpy + onnxruntime (or torch + the checkpoint for "
                       "torch-fp32) + model + catalog",
        "size_bytes": "the ONNX file; torch-fp32: the serving graph's parameters as safetensors (the same tensors "
                      "the ONNX file holds)",
        "compression": f"pruned-magnitude-50: global L1 unstructured 50% of encoder Linear weights (sparsity "
                       f"{sparsity(mag):.2f}), {rec_epochs} recovery epochs; pruned-ffn-50: half the FFN units by norm, "
                       f"{rec_epochs} recovery epochs; student: 1 block (the last) kept, {2 * rec_epochs} epochs of "
                       "0.5*CE + 0.5*tau^2*KL (tau=2); ort-int8/student-int8: quantize_dynamic (+ int8 catalog, per-row scale); "
                       "adaptor frozen everywhere, so all variants share the tenant's catalog",
        "ort-merged": "the classic per-tenant model (catalog inside the graph, scores out): size is per tenant, catalog_bytes 0",
        "quick": args.quick,
        "total_wall_s": round(time.perf_counter() - t_start, 1),
    }
    name = "compression-quick" if args.quick else "compression"
    tg = targets_block(rows)
    path = write_results(name, protocol, rows, COLUMNS, notes=targets_markdown(tg), results_dir=args.results_dir)
    payload = json.loads(path.read_text())
    payload["targets"] = tg
    atomic_write_bytes(path, json.dumps(payload, indent=2, default=str).encode())
    for k, t in tg.items():
        log(f"target {k}: {t['value']:.4f} (target {t['target']}) met={t['met']}")
    plot(rows, args.results_dir / f"{name}.png")
    log(f"wrote {path}")
    return 0


def targets_block(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Issue 4's targets, computed from the result rows (each with ``value``, ``target``, ``met``)."""
    r = {row["variant"]: row for row in rows}
    fp32, int8, eager, student = r["ort-fp32"], r["ort-int8"], r["torch-fp32"], r["student"]

    def entry(value: float, op: str, bound: float, what: str, **extra: Any) -> dict[str, Any]:
        met = value <= bound if op == "<=" else value >= bound
        return {"value": value, "target": f"{op} {bound}", "met": bool(met), "what": what, **extra}

    return {
        "int8_size_ratio": entry(int8["size_bytes"] / fp32["size_bytes"], "<=", 0.30,
                                 "ort-int8 size_bytes / ort-fp32 size_bytes (model file)",
                                 with_catalog=(int8["size_bytes"] + int8["catalog_bytes"])
                                 / (fp32["size_bytes"] + fp32["catalog_bytes"])),
        "int8_ndcg_rel_drop": entry((fp32["ndcg@10"] - int8["ndcg@10"]) / fp32["ndcg@10"], "<=", 0.01,
                                    "(ort-fp32 NDCG@10 - ort-int8 NDCG@10) / ort-fp32 NDCG@10"),
        "ort_vs_torch_p50_b32": entry(fp32["p50_ms_b32"] / eager["p50_ms_b32"], "<=", 0.5,
                                      "ort-fp32 p50_ms_b32 / torch-fp32 p50_ms_b32"),
        "student_speedup_b32": entry(fp32["p50_ms_b32"] / student["p50_ms_b32"], ">=", 2.0,
                                     "ort-fp32 p50_ms_b32 / student p50_ms_b32"),
        "student_ndcg_rel_change": entry((student["ndcg@10"] - fp32["ndcg@10"]) / fp32["ndcg@10"], ">=", -0.03,
                                         "(student NDCG@10 - ort-fp32 NDCG@10) / ort-fp32 NDCG@10"),
    }


def targets_markdown(tg: dict[str, dict[str, Any]]) -> str:
    lines = ["## Targets (issue 4)", "", "| target | measured | goal | met |", "|---|---|---|---|"]
    for t in tg.values():
        extra = f" (model + catalog: {t['with_catalog']:.4f})" if "with_catalog" in t else ""
        lines.append(f"| {t['what']} | {t['value']:.4f}{extra} | {t['target']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["variant"] for r in rows]
    axes[0].barh(names, [r["size_bytes"] / 1024 for r in rows], color="tab:blue")
    axes[0].set_xlabel("model file (KiB)")
    for r in rows:
        axes[1].scatter(r["p50_ms_b32"], r["ndcg@10"], label=r["variant"])
    axes[1].set_xlabel("p50 ms, batch 32 (1 thread)")
    axes[1].set_ylabel("NDCG@10")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
