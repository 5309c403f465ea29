"""Serving load benchmark: one shared ONNX model with per-row adapters vs one model per tenant.

Modes (each a Serve app on 127.0.0.1, driven over HTTP; every request picks a tenant uniformly at
random):

- ``torch-multiplex``: the classic design: ``@serve.multiplexed`` holds one merged torch backbone
  per tenant (LoRA ``W + B A`` merged, prompt set), batches per tenant (Serve splits batches by
  model id), routed by the ``serve_multiplexed_model_id`` header.
- ``ort-merged-multiplex``: the same design with the per-tenant ONNX model of
  ``rec.export.onnx_export.export_merged_tenant_model`` (adapter merged, catalog baked in), one
  ORT session per loaded tenant.
- ``ort-shared-fp32`` / ``ort-shared-int8``: the real app (``serve_apps.recommender``): one ORT
  session, ``@serve.batch`` across tenants, tenant bundles in an LRU.

Tenants: ``--real`` synthetic tenants get real LoRA adapters (random, non-zero), published with
``rec.serving.publish_tenant`` and exported once each as a merged model. The ``N`` benchmark
tenants are file copies of those artifacts (bundle folder or merged-model folder copied, the
manifest's tenant renamed), so the tenant count drives cache / multiplex behaviour without N
exports (N merged exports would take hours here).

Load: a closed loop (``--clients`` clients, each sends its next request when the last returns)
and an open loop (Poisson arrivals at ``--rate`` requests/s, latency counted from the scheduled
send time, so queueing is not hidden), both bounded in time and request count.
``overhead_ratio`` = end-to-end p50 / in-process time of the bare model call for the batch size
the server actually ran (median of its recorded batches). An autoscaling run steps an open-loop
load up and down against the app with ``serve_apps/config.yaml``'s autoscaling settings and
samples the Ranker replica count (``serve.status()``) and p99 per window.

    .venv/bin/python -m bench.serve_load                  # the full run (~15 min on 2 cores)
    .venv/bin/python -m bench.serve_load --quick          # pipeline check (~3 min), writes serve_load_quick.*
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.load_gen import HIST, drive_closed, drive_open, open_summary
from bench.serve_load_results import MODES, MULTIPLEX, fmt_ms, plot_autoscale, plot_matrix, ratios, targets

COLUMNS = ["mode", "tenants", "load", "rps", "p50_ms", "p95_ms", "p99_ms", "errors", "rss_mb", "overhead_ratio",
           "model_rss_mb", "batch_median", "raw_ms"]
REPO = Path(__file__).resolve().parents[1]


# --- setup ---------------------------------------------------------------------------------------
def build_world(work: Path, real: int, items: int, seed: int = 0) -> tuple[Path, Path, list[str], dict[str, float]]:
    """Backbone (random init, default model size), serving root with ``real`` LoRA tenants, and one
    merged per-tenant ONNX model per real tenant under ``work/merged/<tenant>``."""
    import torch

    from rec.adaptation.artifacts import save_adapter
    from rec.adaptation.methods import prepare_model
    from rec.config import AdaptConfig, load_config
    from rec.data.synthetic import generate_tenants
    from rec.export.onnx_export import export_merged_tenant_model
    from rec.models.backbone import build_backbone
    from rec.serving.publish import ensure_serving_model, publish_tenant
    from rec.text import encode_items
    from rec.training.checkpoint import export_backbone, load_backbone

    torch.manual_seed(seed)
    cfg = load_config(None, [f"data.synthetic.tenants={real}", f"data.synthetic.items_per_tenant={items}",
                             "data.synthetic.users_per_tenant=40", f"text.cache_dir={work / 'text-cache'}"])
    model = build_backbone(cfg.model).eval()
    tenants = generate_tenants(cfg.data.synthetic)
    meta = {t.name: {"id_offset": 0, "num_items": t.num_items, "data_hash": t.content_hash()} for t in tenants}
    loaded = load_backbone(export_backbone(work / "backbone", model.state_dict(), cfg, meta, {}, "bench"))
    root = work / "root"
    timing = {}
    t0 = time.perf_counter()
    ensure_serving_model(root, loaded, quantize=True)
    timing["shared_model_export_s"] = time.perf_counter() - t0
    acfg = AdaptConfig(method="lora", output_root=str(work / "adapters"))
    publish_s, merged_s = 0.0, 0.0
    for t in tenants:
        peft_model = prepare_model(loaded.model, acfg)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
        adapter = save_adapter(peft_model, acfg, t.name, acfg.output_root, {"backbone_checksum": loaded.checksum})
        emb = encode_items(list(t.items.text), cfg.text)
        t0 = time.perf_counter()
        publish_tenant(root, loaded, t, emb, adapter)
        publish_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        export_merged_tenant_model(loaded, t, emb, adapter, work / "merged" / t.name)
        merged_s += time.perf_counter() - t0
    timing["bundle_publish_s_per_tenant"] = publish_s / len(tenants)
    timing["merged_export_s_per_tenant"] = merged_s / len(tenants)
    return root, work / "backbone", [t.name for t in tenants], timing


def _clone(src: Path, dst: Path, name: str) -> None:
    from rec.io.artifacts import atomic_write_json

    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["tenant"] = name
    atomic_write_json(dst / "manifest.json", manifest)


def clone_tenants(root: Path, merged: Path, sources: list[str], n: int) -> dict[str, list[str]]:
    """``n`` tenants ``t0000..``: copies of the source bundles (published) and of their merged
    models (``merged/<name>``); returns their item ids."""
    from rec.serving.store import ArtifactRoot

    store = ArtifactRoot(root)
    ids = {}
    for i in range(n):
        src = sources[i % len(sources)]
        name = f"t{i:04d}"
        dst = store.version_dir(name, 1)
        if not dst.exists():
            _clone(store.version_dir(src, 1), dst, name)
            store.set_current(name, 1)
        if not (merged / name).exists():
            _clone(merged / src, merged / name, name)
        ids[name] = json.loads((dst / "item_ids.json").read_text())
    return ids


# --- the per-tenant-model baselines --------------------------------------------------------------
def _rows(index: dict, history: list, max_len: int) -> list[int]:
    return [index[i] for i in history if i in index][-max_len:]


def multiplex_app(kind: str, root: str, backbone: str, merged: str, max_models: int):  # noqa: ANN201
    """One deployment that holds up to ``max_models`` per-tenant models (``@serve.multiplexed``):
    ``kind`` "torch" (merged torch backbone) or "ort" (the merged ONNX export, one session each)."""
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()

    @serve.deployment(name="Model", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
    @serve.ingress(api)
    class PerTenantModels:
        def __init__(self) -> None:
            import torch

            from rec.training.checkpoint import load_backbone

            torch.set_num_threads(1)
            self.base = load_backbone(backbone)
            self.max_len = int(self.base.cfg.data.max_seq_len)
            self.batches: list[int] = []

            async def load(tenant: str):  # noqa: ANN202 - a plain function: Serve keeps its LRU on it
                return self._load(tenant)

            self.load = serve.multiplexed(max_num_models_per_replica=max_models)(load)

        def _load(self, tenant: str):  # noqa: ANN202
            if kind == "ort":
                from rec.export.runtime import make_session
                from rec.io.artifacts import read_manifest

                folder = Path(merged) / tenant
                read_manifest(folder)  # checksums, as a loader of published artifacts would
                ids = json.loads((folder / "item_ids.json").read_text())
                return make_session(folder / "model.onnx", intra_op_threads=1), None, {x: j for j, x in enumerate(ids)}, ids
            import copy

            import torch

            from rec.export.tenant_bundle import load_tenant_bundle
            from rec.serving.store import ArtifactRoot

            store = ArtifactRoot(root)
            b = load_tenant_bundle(store.version_dir(tenant, store.current_version(tenant)))
            model = copy.deepcopy(self.base.model).eval()
            with torch.no_grad():
                for name, (a, bm) in b.lora.items():
                    model.get_submodule(name).weight += torch.from_numpy(bm @ a)
                if b.prompt is not None:
                    model.prompt = torch.nn.Parameter(torch.from_numpy(b.prompt), requires_grad=False)
            return model, torch.from_numpy(b.catalog), b.item_index, b.item_ids

        @api.post("/v1/tenants/{tenant_id}/recommendations")
        async def recommend(self, tenant_id: str, body: dict) -> dict:
            m = await self.load(serve.get_multiplexed_model_id() or tenant_id)
            return await self.batched((m, body["history"], int(body.get("k", 10))))

        @api.get("/stats")
        async def stats(self) -> dict:
            return {"batches": self.batches[-1000:]}

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
        async def batched(self, reqs: list) -> list:
            (model, catalog, index, ids) = reqs[0][0]  # one tenant per batch (split by model id)
            self.batches = (self.batches + [len(reqs)])[-1000:]
            rows = [_rows(index, h, self.max_len) for _, h, _ in reqs]
            T = max(1, max(len(r) for r in rows))
            idx = np.zeros((len(rows), T), np.int64)
            pad = np.ones((len(rows), T), bool)
            for j, r in enumerate(rows):
                if r:
                    idx[j, T - len(r):] = r
                    pad[j, T - len(r):] = False
            if kind == "ort":
                scores = model.run(["scores"], {"items": idx, "pad": pad})[0]
            else:
                import torch

                with torch.no_grad():
                    it, pd = torch.from_numpy(idx), torch.from_numpy(pad)
                    scores = model.scores(model.user_vector(catalog[it], pd), catalog).numpy()
            out = []
            for j, (_, _, k) in enumerate(reqs):
                top = np.argpartition(-scores[j], k)[:k]
                top = top[np.argsort(-scores[j][top])]
                out.append({"items": [{"item_id": ids[i], "score": float(scores[j][i])} for i in top]})
            return out

    return PerTenantModels.bind()


# --- measurements --------------------------------------------------------------------------------
def replica_rss_mb(app: str, deployment: str | None = None) -> float:
    import psutil

    total = 0
    tag = f"ServeReplica:{app}:{deployment or ''}"
    for p in psutil.process_iter(["cmdline"]):
        if tag in " ".join(p.info["cmdline"] or []):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    return round(total / 2**20, 1)


class RawTimer:
    """In-process time of the bare model call for a batch of ``b`` rows (1 thread, median of 30)."""

    def __init__(self, root: Path, backbone: Path, merged: Path, sources: list[str]) -> None:
        from rec.export.tenant_bundle import load_tenant_bundle
        from rec.serving.store import ArtifactRoot

        self.root, self.backbone, self.merged = root, backbone, merged
        store = ArtifactRoot(root)
        self.bundles = [load_tenant_bundle(store.version_dir(t, 1)) for t in sources]
        self.cache: dict[tuple[str, int], float] = {}

    @staticmethod
    def _median(fn, n: int = 30) -> float:  # noqa: ANN001
        fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1000)

    def ms(self, mode: str, b: int) -> float:
        key = (mode, b)
        if key in self.cache:
            return self.cache[key]
        rows = [np.arange(HIST) % len(bd.catalog) for bd in self.bundles]
        if mode.startswith("ort-shared"):
            from rec.export.runtime import SharedRanker
            from rec.serving.store import ArtifactRoot

            r = SharedRanker(ArtifactRoot(self.root).model_dir, variant=mode.rsplit("-", 1)[1])
            feed = r.build_feed([rows[i % len(rows)] for i in range(b)], [self.bundles[i % len(rows)] for i in range(b)]).inputs
            ms = self._median(lambda: r.raw_run(feed))
        elif mode == "ort-merged-multiplex":
            from rec.export.runtime import make_session

            sess = make_session(self.merged / sorted(p.name for p in self.merged.iterdir())[0] / "model.onnx", intra_op_threads=1)
            feed = {"items": np.tile(rows[0], (b, 1)).astype(np.int64), "pad": np.zeros((b, HIST), bool)}
            ms = self._median(lambda: sess.run(["scores"], feed))
        else:
            import torch

            from rec.training.checkpoint import load_backbone

            torch.set_num_threads(1)
            m = load_backbone(self.backbone).model
            cat = torch.from_numpy(self.bundles[0].catalog)
            idx, pad = torch.from_numpy(np.tile(rows[0], (b, 1))), torch.zeros(b, HIST, dtype=torch.bool)

            def run() -> None:
                with torch.no_grad():
                    m.scores(m.user_vector(cat[idx], pad), cat)

            ms = self._median(run)
        self.cache[key] = ms
        return ms


def batch_median(app: str, mode: str, url: str) -> int:
    import requests
    from ray import serve

    if mode in MULTIPLEX:
        batches = requests.get(f"{url}/stats", timeout=30).json()["batches"]
    else:
        batches = [b for b, _ in serve.get_deployment_handle("Ranker", app_name=app).stats.remote().result()["batches"]]
    return max(1, int(round(float(np.median(batches))))) if batches else 1


# --- autoscaling ---------------------------------------------------------------------------------
def autoscale_run(root: Path, tenants: dict, steps: list[tuple[float, float]], overrides: dict[str, Any],
                  window: float = 5.0) -> dict[str, Any]:
    """The shared app with config.yaml's deployment settings (+ ``overrides`` on the Ranker's and
    Ingress' autoscaling_config); ``steps`` of open-loop load; replicas sampled every second."""
    import yaml
    from ray import serve

    from serve_apps.api import Ingress
    from serve_apps.args import RecommenderArgs
    from serve_apps.ranker import Ranker

    spec = yaml.safe_load((REPO / "serve_apps" / "config.yaml").read_text())["applications"][0]
    deps = {d["name"]: d for d in spec["deployments"]}
    opts = {}
    for name in ("Ingress", "Ranker"):
        d = deps[name]
        opts[name] = {"max_ongoing_requests": d["max_ongoing_requests"], "ray_actor_options": d["ray_actor_options"],
                      "autoscaling_config": {**d["autoscaling_config"], **overrides.get(name, {})}}
    plain = RecommenderArgs.model_validate({**spec["args"], "artifact_root": str(root), "tenant_cache_mb": 1024}).model_dump(mode="json")
    app = "bench-autoscale"
    serve.run(Ingress.options(**opts["Ingress"]).bind(plain, Ranker.options(**opts["Ranker"]).bind(plain)),
              name=app, route_prefix=f"/{app}")
    url = f"http://127.0.0.1:18000/{app}"
    drive_closed(url, tenants, 4, 3.0, header=False, max_requests=400)
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    t_start = time.perf_counter() + 0.2  # drive_open's start

    def sampler() -> None:
        while not stop.is_set():
            try:
                d = serve.status().applications[app].deployments
                samples.append({"t": round(time.perf_counter() - t_start, 2),
                                "ranker": d["Ranker"].replica_states.get("RUNNING", 0),
                                "ingress": d["Ingress"].replica_states.get("RUNNING", 0)})
            except Exception:  # noqa: BLE001 - a missed sample is only a gap in the plot
                pass
            stop.wait(1.0)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    recs = drive_open(url, tenants, steps, header=False, seed=7)
    stop.wait(5.0)
    stop.set()
    th.join()
    serve.delete(app)
    total = sum(s for _, s in steps)
    windows = []
    edges, acc = [], 0.0
    for rate, secs in steps:
        edges.append((acc, acc + secs, rate))
        acc += secs
    for w0 in np.arange(0, total, window):
        w = [r for r in recs if w0 <= r[0] < w0 + window]
        lat = [r[1] * 1000 for r in w if r[2]]
        rate = next(r for a0, a1, r in edges if a0 <= w0 < a1)
        reps = [s["ranker"] for s in samples if w0 <= s["t"] < w0 + window]
        windows.append({"t0": float(w0), "offered_rps": rate, "done_rps": len(lat) / window,
                        "p99_ms": float(np.percentile(lat, 99)) if lat else None, "errors": sum(1 for r in w if not r[2]),
                        "ranker_replicas_max": max(reps) if reps else None})
    return {"app_config": opts, "steps": [{"rps": r, "seconds": s} for r, s in steps], "window_s": window,
            "windows": windows, "samples": samples, "summary": open_summary(recs, total),
            "max_ranker_replicas": max((s["ranker"] for s in samples), default=None),
            "final_ranker_replicas": samples[-1]["ranker"] if samples else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--tenants", nargs="+", type=int, default=[1, 100, 1000])
    ap.add_argument("--clients", "--load", type=int, default=8, help="closed loop: concurrent clients (--load: old name)")
    ap.add_argument("--rate", type=float, default=30.0, help="open loop: Poisson arrivals per second")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per (mode, tenants, load)")
    ap.add_argument("--max-requests", type=int, default=3000, help="bound per (mode, tenants, load)")
    ap.add_argument("--real", type=int, default=4, help="distinct real LoRA tenants the clones copy")
    ap.add_argument("--items", type=int, default=300, help="catalog size per tenant")
    ap.add_argument("--max-models", type=int, default=64, help="multiplex modes: tenants per replica")
    ap.add_argument("--autoscale-steps", default="0.2:20,0.6:20,1.1:30,0.6:20,0.2:40",
                    help="fraction of the measured ort-shared-fp32 closed-loop rps : seconds, ...")
    ap.add_argument("--no-autoscale", action="store_true")
    ap.add_argument("--quick", action="store_true", help="pipeline check: tenants 1 10, 3 s, short autoscale")
    ap.add_argument("--name", default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.tenants, a.duration, a.autoscale_steps = [1, 10], 3.0, "0.3:5,1.0:8,0.3:7"
    name = a.name or ("serve_load_quick" if a.quick else "serve_load")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import ray
    import requests
    from ray import serve

    from bench._results import RESULTS, write_results
    from rec.io.artifacts import atomic_write_bytes
    from rec.ray_session import LOCAL_RUNTIME_ENV
    from serve_apps.recommender import build_app

    t_run = time.perf_counter()
    load_avg = [os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    rows: list[dict[str, Any]] = []
    auto: dict[str, Any] | None = None
    closed, opened = f"closed-{a.clients}", f"open-{a.rate:g}rps"
    try:
        root, backbone, sources, setup = build_world(work, a.real, a.items)
        merged = work / "merged"
        timer = RawTimer(root, backbone, merged, sources)
        ray.init(num_cpus=2, include_dashboard=False, runtime_env=LOCAL_RUNTIME_ENV, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": 18000})
        tenants = {}
        for n in a.tenants:
            t0 = time.perf_counter()
            tenants = clone_tenants(root, merged, sources, n)
            tenants["__names__"] = sorted(k for k in tenants if k != "__names__")
            setup[f"clone_s_{n}"] = time.perf_counter() - t0
            for mode in a.modes:  # modes side by side per tenant count: they see the same machine load
                app = f"bench-{mode}-{n}"
                mux = mode in MULTIPLEX
                if mux:
                    app_obj = multiplex_app("ort" if mode.startswith("ort") else "torch", str(root), str(backbone), str(merged), a.max_models)
                else:
                    app_obj = build_app({"artifact_root": str(root), "model_variant": mode.rsplit("-", 1)[1], "tenant_cache_mb": 1024})
                serve.run(app_obj, name=app, route_prefix=f"/{app}")
                url = f"http://127.0.0.1:18000/{app}"
                warm = drive_closed(url, tenants, a.clients, 3.0, header=mux, max_requests=400)
                if not mux:  # every bundle resident, so RSS counts all N tenants
                    with requests.Session() as s:
                        for t in tenants["__names__"]:
                            s.get(f"{url}/v1/tenants/{t}", timeout=30).raise_for_status()
                results = {closed: drive_closed(url, tenants, a.clients, a.duration, header=mux, max_requests=a.max_requests)}
                recs = drive_open(url, tenants, [(a.rate, a.duration)], header=mux, seed=n)
                results[opened] = open_summary(recs, a.duration)
                bm = batch_median(app, mode, url)
                rss_all = replica_rss_mb(app)
                rss_model = replica_rss_mb(app, "Model" if mux else "Ranker")
                serve.delete(app)
                raw = timer.ms(mode, bm)
                for load, res in results.items():
                    row = {"mode": mode, "tenants": n, "load": load, **res, "rss_mb": rss_all,
                           "overhead_ratio": res["p50_ms"] / raw, "model_rss_mb": rss_model, "batch_median": bm,
                           "raw_ms": raw, "warmup_errors": warm["errors"]}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                load_avg.append(os.getloadavg())
        if not a.no_autoscale:
            ref = next((r["rps"] for r in rows if r["mode"] == "ort-shared-fp32" and r["load"] == closed
                        and r["tenants"] == max(a.tenants)), 60.0)
            steps = [(max(2.0, round(float(f) * ref, 1)), float(s)) for f, s in (x.split(":") for x in a.autoscale_steps.split(","))]
            overrides = {"Ranker": {"downscale_delay_s": 10, "metrics_interval_s": 1, "look_back_period_s": 5,
                                    "target_ongoing_requests": 4},
                         "Ingress": {"downscale_delay_s": 10, "metrics_interval_s": 1, "look_back_period_s": 5}}
            auto = autoscale_run(root, tenants, steps, overrides)
            auto["overrides"] = overrides
            print(json.dumps({k: auto[k] for k in ("steps", "summary", "max_ranker_replicas", "final_ranker_replicas")}), flush=True)
            load_avg.append(os.getloadavg())
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    tgt = targets(rows, closed, opened, a.tenants)
    protocol = {
        "model": "default ModelConfig (d_model 64, 2 blocks, random init), LoRA rank 8 on every projection (random "
                 f"non-zero B), catalogs of {a.items} items; {a.real} real adapters, each published as a bundle and "
                 "exported once as a merged per-tenant ONNX model (export_merged_tenant_model, parity-checked)",
        "tenants": "N tenants t0000.. are FILE COPIES of the real artifacts (bundle folders / merged-model folders copied, "
                   "manifest tenant renamed): tenant count drives caching, multiplex LRU and memory, not export time. "
                   f"Export cost per real tenant: merged {setup['merged_export_s_per_tenant']:.1f} s, bundle publish "
                   f"{setup['bundle_publish_s_per_tenant']:.1f} s",
        "load": f"{closed}: {a.clients} closed-loop clients; {opened}: Poisson arrivals, latency from the scheduled send "
                f"time; each {a.duration:g} s and <= {a.max_requests} requests, after a 3 s closed warm-up (shared modes "
                "also GET every tenant once so all N bundles are resident); uniform tenant per request, "
                f"{HIST}-item history, k=10; a response counts only if HTTP 200 with 10 items",
        "serve": "local Ray (2 CPUs), HTTP on 127.0.0.1; ort-shared: serve_apps.recommender (Ingress 0.25 CPU -> Ranker "
                 "0.25 CPU, batch 16 / 5 ms across tenants, tenant_cache_mb 1024); torch-/ort-merged-multiplex: one 0.5-CPU "
                 f"replica, FastAPI + @serve.multiplexed ({a.max_models} models), batch 16 / 5 ms per tenant, no Ingress hop",
        "rss_mb": "sum of the app's replica processes after the run; model_rss_mb: the model-holding replica (Ranker or Model)",
        "overhead_ratio": "end-to-end p50 / in-process median time of the bare model call (ORT session.run, or the torch "
                          "forward for torch-multiplex) for a batch of batch_median rows = the median batch size the "
                          "server recorded; raw_ms is that time",
        "autoscaling": "ort-shared-fp32 with serve_apps/config.yaml's deployment options (Ranker 0.5 CPU, 1-3 replicas; "
                       "Ingress 0.25 CPU, 1-2) with overrides {overrides}, open-loop steps as fractions of the measured "
                       "ort-shared-fp32 closed-loop rps; replicas from serve.status() every 1 s, p99 per 5 s window "
                       "(by scheduled time)".replace("{overrides}", json.dumps(auto["overrides"]) if auto else "-"),
        "machine_load": f"load average (1/5/15 min) before/after each tenant count: {[tuple(round(x, 1) for x in la) for la in load_avg]}; "
                        "the 2 cores are shared with other jobs: compare modes within a tenant count (run back to back)",
        "setup_s": {k: round(v, 1) for k, v in setup.items()},
        "wall_s": round(time.perf_counter() - t_run, 1),
    }
    results_dir = RESULTS
    pngs = plot_matrix(rows, name, results_dir)
    notes = f"## Closed-loop throughput side by side ({closed})\n\n{ratios(rows, closed)}\n\n## Targets\n\n| target | measured | met |\n|---|---|---|\n" + "\n".join(
        f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |" for t in tgt)
    if auto:
        pngs.append(plot_autoscale(auto, name, results_dir))
        notes += ("\n\n## Autoscaling run\n\n| t0 s | offered rps | completed rps | p99 ms | errors | Ranker replicas (max) |\n"
                  "|---|---|---|---|---|---|\n" + "\n".join(
                      f"| {w['t0']:.0f} | {w['offered_rps']:.0f} | {w['done_rps']:.1f} | "
                      f"{fmt_ms(w['p99_ms'])} | "
                      f"{w['errors']} | {w['ranker_replicas_max']} |" for w in auto["windows"]))
    notes += "\n\nPlots: " + ", ".join(f"`{p.name}`" for p in pngs)
    jpath = write_results(name, protocol, rows, COLUMNS, notes=notes)
    payload = json.loads(jpath.read_text())
    payload["targets"] = tgt
    payload["autoscaling"] = auto
    payload["plots"] = [p.name for p in pngs]
    atomic_write_bytes(jpath, json.dumps(payload, indent=2, default=str).encode())
    print(notes)
    print(f"wall {protocol['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
