"""Serving load benchmark: one shared ONNX model with per-row adapters vs one model per tenant.

Modes (each a Serve app on 127.0.0.1, driven over HTTP; every request picks a tenant uniformly at
random):

- ``torch-multiplex``: the classic design: ``@serve.multiplexed`` holds one merged torch backbone
  per tenant (LoRA ``W + B A`` merged, prompt set), batches per tenant (Serve splits batches by
  model id), routed by the ``serve_multiplexed_model_id`` header. One 0.5-CPU deployment.
- ``ort-merged-multiplex``: the same design with the per-tenant ONNX model of
  ``rec.export.onnx_export.export_merged_tenant_model`` (adapter merged, catalog baked in).
- ``ort-shared-fp32``: the real app (``serve_apps.recommender``, default layout): ONE 0.5-CPU
  deployment (FastAPI + one ORT session + ``@serve.batch`` across tenants), fp32 model, fp32
  catalogs, fp32 LoRA.
- ``ort-shared-int8``: the same app with the int8 model, int8 catalogs (per-row scale, published
  with ``catalog_dtype=int8``) and fp16 LoRA in the tenant cache: the compact configuration.
- ``ort-shared-fp32-2hop``: the previous layout, Ingress (0.25 CPU) -> Ranker (0.25 CPU), fp32:
  what the extra Serve hop costs.
- ``ort-shared-sharded``: ``multiplex: true`` (serve_apps/config.sharded.yaml): Ingress -> Ranker
  with the tenant id as multiplexed model id (tenant sharding; Serve then batches per tenant).

Every mode uses the same batching policy (``--max-batch`` / ``--batch-wait``).

Tenants: ``--real`` synthetic tenants get real LoRA adapters (random, non-zero), published with
``rec.export.publish.publish_tenant`` (fp32 and int8 catalogs, two roots) and exported once each as a
merged model. The ``N`` benchmark tenants are file copies of those artifacts (manifest tenant
renamed), so the tenant count drives cache / multiplex behaviour without N exports.

Loads per (mode, N), all bounded in time and requests (bench/load_gen.py, one asyncio/aiohttp
client process whose own CPU is recorded): ``closed-1`` (unloaded latency: the overhead ratio),
``closed-8``, ``closed-64`` (high concurrency: mixed-tenant batches form), and ``slo-p99-50ms``:
the highest Poisson rate with p99 <= 50 ms and 0 errors, by bisection. The server's batch sizes
and per-stage timings (serve_apps/timing.py) are read from the replica after each load.
``overhead_ratio`` = end-to-end p50 / in-process ``session.run`` time for the median batch the
server ran. An autoscaling run steps an open-loop load up and down against the app with
``serve_apps/config.yaml``'s autoscaling settings.

    .venv/bin/python -m bench.serve_load                  # the full run (~20 min on 2 cores)
    .venv/bin/python -m bench.serve_load --quick          # pipeline check (~4 min), writes serve_load_quick.*
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

from bench.load_gen import HIST, drive_closed, drive_open, max_rate_at_slo, open_summary
from bench.serve_load_baselines import RawTimer, multiplex_app
from bench.serve_session import INGRESS_ENV, app_url, haproxy_version, replica_rss_mb, serve_cpu_s, serve_session
from bench.serve_load_results import (DIRECT_MODES, INGRESS, MODES, MULTIPLEX, SHARED, VARIANT, notes_markdown, plot_autoscale,
                                      plot_matrix, targets)

COLUMNS = ["mode", "ingress", "tenants", "load", "rps", "p50_ms", "p95_ms", "p99_ms", "errors", "rss_mb", "overhead_ratio",
           "model_rss_mb", "batch_median", "batch_max", "raw_ms", "client_cpu_frac"]
REPO = Path(__file__).resolve().parents[1]


# --- setup ---------------------------------------------------------------------------------------
def build_world(work: Path, real: int, items: int, seed: int = 0) -> tuple[Path, Path, list[str], dict[str, float]]:
    """Backbone (random init, default model size), serving root ``work/root`` with ``real`` LoRA
    tenants (fp32 catalogs), the same tenants in ``work/root-int8`` (int8 catalogs, same model), and
    one merged per-tenant ONNX model per real tenant under ``work/merged/<tenant>``."""
    import torch

    from rec.adaptation.artifacts import save_adapter
    from rec.adaptation.prepare import prepare_model
    from rec.config import AdaptConfig, load_config
    from rec.data.synthetic import generate_tenants
    from rec.export.onnx_export import export_merged_tenant_model
    from rec.models.backbone import build_backbone
    from rec.export.publish import ensure_serving_model, publish_tenant
    from rec.text import encode_items
    from rec.training.checkpoint import export_backbone, load_backbone

    torch.manual_seed(seed)
    cfg = load_config(None, [f"data.synthetic.tenants={real}", f"data.synthetic.items_per_tenant={items}",
                             "data.synthetic.users_per_tenant=40", f"text.cache_dir={work / 'text-cache'}"])
    model = build_backbone(cfg.model).eval()
    tenants = generate_tenants(cfg.data.synthetic)
    meta = {t.name: {"id_offset": 0, "num_items": t.num_items, "data_hash": t.content_hash()} for t in tenants}
    loaded = load_backbone(export_backbone(work / "backbone", model.state_dict(), cfg, meta, {}, "bench"))
    root, root8 = work / "root", work / "root-int8"
    timing = {}
    t0 = time.perf_counter()
    ensure_serving_model(root, loaded, quantize=True)
    timing["shared_model_export_s"] = time.perf_counter() - t0
    shutil.copytree(root / "model", root8 / "model")
    # LoRA rank 8 on every projection, the adaptor's too (its LoRA merged into the catalog), as recorded
    acfg = AdaptConfig(method="lora", lora={"train_adaptor": False}, output_root=str(work / "adapters"))
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
        publish_tenant(root8, loaded, t, emb, adapter, catalog_dtype="int8")
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


def clone_tenants(roots: list[Path], merged: Path, sources: list[str], n: int) -> dict[str, list[str]]:
    """``n`` tenants ``t0000..``: copies of the source bundles (published, in every root) and of
    their merged models (``merged/<name>``); returns their item ids."""
    from rec.serving.store import ArtifactRoot

    ids = {}
    for i in range(n):
        src = sources[i % len(sources)]
        name = f"t{i:04d}"
        for root in roots:
            store = ArtifactRoot(root)
            dst = store.version_dir(name, 1)
            if not dst.exists():
                _clone(store.version_dir(src, 1), dst, name)
                store.set_current(name, 1)
        if not (merged / name).exists():
            _clone(merged / src, merged / name, name)
        ids[name] = json.loads((dst / "item_ids.json").read_text())
    return ids


# --- measurements --------------------------------------------------------------------------------
def app_for(mode: str, roots: dict[str, Path], backbone: Path, merged: Path, a: argparse.Namespace):  # noqa: ANN201
    """(Serve application, deployment whose ``stats`` to read, deployment holding the model)."""
    from serve_apps.api import Ingress
    from serve_apps.args import RecommenderArgs
    from serve_apps.ranker import Ranker
    from serve_apps.recommender import SINGLE_HOP, build_app

    if mode in MULTIPLEX:
        kind = "ort" if mode.startswith("ort") else "torch"
        return multiplex_app(kind, str(roots["fp32"]), str(backbone), str(merged), a.max_models, a.max_batch, a.batch_wait), "Model", "Model"
    variant = VARIANT[mode]
    args = {"artifact_root": str(roots[variant]), "model_variant": variant, "adapter_dtype": "fp16" if variant == "int8" else "fp32",
            "tenant_cache_mb": 1024, "max_batch_size": a.max_batch, "batch_wait_timeout_s": a.batch_wait,
            "multiplex": mode == "ort-shared-sharded", "max_tenants_per_replica": a.max_models, "record_timings": True}
    if mode == "ort-shared-fp32-2hop":  # the layout before the single-hop app: Ingress -> Ranker, no multiplexing
        plain = RecommenderArgs.model_validate(args).model_dump(mode="json")
        return Ingress.bind(plain, Ranker.bind(plain)), "Ingress", "Ranker"
    if mode == "ort-shared-sharded":
        return build_app(args), "Ingress", "Ranker"
    return build_app(args), SINGLE_HOP, SINGLE_HOP


def server_view(stats: dict[str, Any]) -> dict[str, Any]:
    """Batch-size distribution and per-stage p50 timings from a replica's ``stats()``."""
    sizes = [b for b, _ in stats.get("batches", [])]
    mixes = [t for _, t in stats.get("batches", [])]
    stages = {k: round(v["p50_ms"], 3) for k, v in stats.get("timings", {}).items()}
    stages.update({f"ingress.{k}": round(v["p50_ms"], 3) for k, v in stats.get("ingress_timings", {}).items()})
    hist = {int(k): int(v) for k, v in zip(*np.unique(sizes, return_counts=True))} if sizes else {}
    loaded = stats.get("loaded") or {}
    return {"batch_median": max(1, int(round(float(np.median(sizes))))) if sizes else 1,
            "batch_p90": float(np.percentile(sizes, 90)) if sizes else 1.0, "batch_max": max(sizes, default=1),
            "batch_mean": round(float(np.mean(sizes)), 2) if sizes else 1.0, "batches": len(sizes),
            "tenants_per_batch_mean": round(float(np.mean(mixes)), 2) if mixes else 1.0,
            "batch_hist": hist, "stages_p50_ms": stages,
            "bundle_kb_per_tenant": round(sum(loaded.values()) / len(loaded) / 1024, 1) if loaded else None}


def warm_all(url: str, tenants: dict) -> None:
    """GET every tenant's status once: the replica loads every bundle."""
    import requests

    with requests.Session() as s:
        for t in tenants["__names__"]:
            s.get(f"{url}/v1/tenants/{t}", timeout=30).raise_for_status()


def measure_mode(mode: str, n: int, tenants: dict, roots: dict[str, Path], backbone: Path, merged: Path,
                 timer: RawTimer, a: argparse.Namespace, ingress: str = "proxy") -> list[dict[str, Any]]:
    """Deploy ``mode``, warm it, run every load; one row per load."""
    from ray import serve

    app = f"bench-{mode}-{n}"
    app_obj, stats_dep, model_dep = app_for(mode, roots, backbone, merged, a)
    serve.run(app_obj, name=app, route_prefix=f"/{app}")
    url = app_url(app, ingress, a.port)
    mux = mode in MULTIPLEX
    handle = serve.get_deployment_handle(stats_dep, app_name=app)
    warm = drive_closed(url, tenants, 8, 2.0, header=mux, max_requests=300)
    if mode in SHARED and mode != "ort-shared-sharded":  # every bundle resident, so RSS counts all N tenants
        warm_all(url, tenants)
    rows: list[dict[str, Any]] = []
    for load, c in [(f"closed-{c}", c) for c in a.clients] + [("open-slo", None)]:
        handle.stats.remote(True).result()
        if c is not None:
            cpu0 = serve_cpu_s(app)
            res = drive_closed(url, tenants, c, a.duration if c > 1 else a.duration / 2, header=mux,
                               max_requests=a.max_requests, seed=n + c)
            cpu1 = serve_cpu_s(app)
            per = max(1, res["requests"])
            extra: dict[str, Any] = {"cpu_ms_per_request": {k: round((v - cpu0.get(k, 0.0)) * 1000 / per, 2) for k, v in cpu1.items()}}
        else:
            cap = max(r["rps"] for r in rows)
            slo = max_rate_at_slo(url, tenants, mux, hi=1.2 * cap, slo_p99_ms=a.slo_ms, duration=a.slo_duration,
                                  steps=a.slo_steps, seed=n)
            best = slo["at_rate"] or {**dict.fromkeys(("p50_ms", "p95_ms", "p99_ms"), float("nan")), "requests": 0,
                                      "client_cpu_frac": 0.0}
            res = {**best, "rps": slo["rate"], "errors": sum(p["errors"] for p in slo["probes"])}
            load = f"open-slo-p99<={a.slo_ms:g}ms"
            extra = {"slo_probes": slo["probes"], "slo_hi_rps": round(1.2 * cap, 1)}
        view = server_view(handle.stats.remote(False).result())
        rows.append({"mode": mode, "ingress": ingress, "tenants": n, "load": load, "url": url, **res, **view, **extra})
    rss_all, rss_model = replica_rss_mb(app), replica_rss_mb(app, model_dep)
    serve.delete(app)
    for row in rows:
        raw = timer.ms(mode, row["batch_median"])
        rank = timer.rank_ms(mode, row["batch_median"])
        row.update(rss_mb=rss_all, model_rss_mb=rss_model, raw_ms=raw, overhead_ratio=row["p50_ms"] / raw,
                   raw_ms_max_batch=timer.ms(mode, row["batch_max"]),
                   overhead_ratio_max_batch=row["p50_ms"] / timer.ms(mode, row["batch_max"]),
                   rank_ms=rank, overhead_vs_rank=None if rank is None else row["p50_ms"] / rank,
                   warmup_errors=warm["errors"])
        print(json.dumps({k: v for k, v in row.items() if k not in ("batch_hist", "slo_probes")}, default=str), flush=True)
    return rows


# --- autoscaling ---------------------------------------------------------------------------------
def autoscale_run(root: Path, tenants: dict, steps: list[tuple[float, float]], overrides: dict[str, Any],
                  port: int, ingress: str = "proxy", window: float = 5.0) -> dict[str, Any]:
    """The app with config.yaml's deployment options (+ ``overrides`` on its autoscaling_config);
    ``steps`` of open-loop load; replicas sampled every second."""
    import yaml
    from ray import serve

    from serve_apps.api import Ingress
    from serve_apps.args import RecommenderArgs
    from serve_apps.recommender import SINGLE_HOP

    spec = yaml.safe_load((REPO / "serve_apps" / "config.yaml").read_text())["applications"][0]
    d = {x["name"]: x for x in spec["deployments"]}[SINGLE_HOP]
    opts = {"max_ongoing_requests": d["max_ongoing_requests"], "ray_actor_options": d["ray_actor_options"],
            "autoscaling_config": {**d["autoscaling_config"], **overrides}}
    plain = RecommenderArgs.model_validate({**spec["args"], "artifact_root": str(root), "tenant_cache_mb": 1024}).model_dump(mode="json")
    app = "bench-autoscale"
    serve.run(Ingress.options(name=SINGLE_HOP, **opts).bind(plain), name=app, route_prefix=f"/{app}")
    url = app_url(app, ingress, port)
    warm_all(url, tenants)  # the first replica is warm, as a long-running one would be; new ones start cold
    drive_closed(url, tenants, 4, 3.0, header=False, max_requests=400)
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    t_start = time.perf_counter() + 0.05  # drive_open's start

    def sampler() -> None:
        while not stop.is_set():
            try:
                dep = serve.status().applications[app].deployments[SINGLE_HOP]
                samples.append({"t": round(time.perf_counter() - t_start, 2), "replicas": dep.replica_states.get("RUNNING", 0)})
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
    edges, acc = [], 0.0
    for rate, secs in steps:
        edges.append((acc, acc + secs, rate))
        acc += secs
    windows = []
    for w0 in np.arange(0, total, window):
        w = [r for r in recs if w0 <= r[0] < w0 + window]
        lat = [r[1] * 1000 for r in w if r[2]]
        rate = next(r for a0, a1, r in edges if a0 <= w0 < a1)
        reps = [s["replicas"] for s in samples if w0 <= s["t"] < w0 + window]
        windows.append({"t0": float(w0), "offered_rps": rate, "done_rps": len(lat) / window,
                        "p99_ms": float(np.percentile(lat, 99)) if lat else None, "errors": sum(1 for r in w if not r[2]),
                        "replicas_max": max(reps) if reps else None})
    return {"deployment": SINGLE_HOP, "app_config": opts, "steps": [{"rps": r, "seconds": s} for r, s in steps],
            "window_s": window, "windows": windows, "samples": samples, "summary": open_summary(recs, total),
            "max_replicas": max((s["replicas"] for s in samples), default=None),
            "final_replicas": samples[-1]["replicas"] if samples else None}


AUTOSCALE_REF = "closed-8"  # the step fractions are of this load's ort-shared-fp32 rps at the largest tenant count
AUTOSCALE_OVERRIDES = {"downscale_delay_s": 10, "metrics_interval_s": 1, "look_back_period_s": 5, "target_ongoing_requests": 4}


def autoscale_ingress(a: argparse.Namespace) -> str:
    """Autoscaled replicas share the load only behind one address: HAProxy when measured, else the proxy."""
    return "haproxy" if "haproxy" in a.ingress else "proxy"


def run_autoscale(rows: list[dict[str, Any]], root: Path, tenants: dict, a: argparse.Namespace) -> dict[str, Any]:
    ingress = autoscale_ingress(a)
    ref = next((r["rps"] for r in rows if r["mode"] == "ort-shared-fp32" and r["load"] == AUTOSCALE_REF
                and r["tenants"] == max(a.tenants) and r.get("ingress", "proxy") == ingress), 60.0)
    steps = [(max(2.0, round(float(f) * ref, 1)), float(s)) for f, s in (x.split(":") for x in a.autoscale_steps.split(","))]
    auto = autoscale_run(root, tenants, steps, AUTOSCALE_OVERRIDES, a.port, ingress)
    auto["ingress"] = ingress
    auto["overrides"] = AUTOSCALE_OVERRIDES
    auto["reference"] = {"load": AUTOSCALE_REF, "rps": ref}
    print(json.dumps({k: auto[k] for k in ("steps", "summary", "max_replicas", "final_replicas")}), flush=True)
    return auto


def autoscale_only(a: argparse.Namespace, name: str) -> int:
    """Re-run only the autoscaling part against the rows of an existing ``<name>.json`` (same
    world recipe), replacing its ``autoscaling`` block, plot and markdown."""
    from bench._results import RESULTS, write_results
    from rec.io.artifacts import atomic_write_bytes

    old = json.loads((RESULTS / f"{name}.json").read_text())
    rows, protocol = old["rows"], old["protocol"]
    a.tenants = sorted({r["tenants"] for r in rows})
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    try:
        root, _, sources, _ = build_world(work, a.real, a.items)
        tenants = clone_tenants([root], work / "merged", sources, max(a.tenants))
        tenants["__names__"] = sorted(k for k in tenants if k != "__names__")
        with serve_session(autoscale_ingress(a), a.port):
            auto = run_autoscale(rows, root, tenants, a)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    protocol["autoscaling"] = (f"re-run alone at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (bench.serve_load "
                               f"--autoscale-only): ort-shared-fp32 with serve_apps/config.yaml's Recommender options "
                               f"(0.5 CPU, 1-3 replicas), autoscaling overrides {json.dumps(AUTOSCALE_OVERRIDES)}, "
                               f"{max(a.tenants)} tenants, open-loop steps {a.autoscale_steps} as fractions of the measured "
                               f"ort-shared-fp32 {AUTOSCALE_REF} rps ({auto['reference']['rps']:.0f}); replicas from serve.status() "
                               "every 1 s, p99 per 5 s window (by scheduled time)")
    if "autoscaling" in old and old["autoscaling"]:
        protocol["autoscaling_first_run"] = (
            f"the full run's autoscaling part used fractions of the closed-64 (saturation) rps, peaking at "
            f"{max(s['rps'] for s in old['autoscaling']['steps']):.0f} rps offered: the queue grew past the client's 30 s "
            f"timeout ({old['autoscaling']['summary']['errors']} timeouts); kept in serve_load.json as autoscaling_first_run")
    pngs = [RESULTS / p for p in old.get("plots", []) if not p.endswith("_autoscale.png")]
    pngs.append(plot_autoscale(auto, name, RESULTS))
    notes = notes_markdown(rows, old["targets"], auto, pngs)
    jpath = write_results(name, protocol, rows, COLUMNS, notes=notes)
    payload = json.loads(jpath.read_text())
    payload.update(targets=old["targets"], autoscaling=auto, autoscaling_first_run=old.get("autoscaling"),
                   plots=[p.name for p in pngs])
    atomic_write_bytes(jpath, json.dumps(payload, indent=2, default=str).encode())
    print(notes)
    return 0


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, str]:
    """The command line (``--quick`` shortens every load) and the results name."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--tenants", nargs="+", type=int, default=[1, 100, 1000])
    ap.add_argument("--clients", nargs="+", type=int, default=[1, 8, 64], help="closed loops: concurrent clients")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per closed loop (closed-1: half)")
    ap.add_argument("--max-requests", type=int, default=4000, help="bound per closed loop")
    ap.add_argument("--slo-ms", type=float, default=50.0, help="p99 target of the rate sweep")
    ap.add_argument("--slo-steps", type=int, default=5, help="bisection probes per sweep")
    ap.add_argument("--slo-duration", type=float, default=3.5, help="seconds per probe")
    ap.add_argument("--max-batch", type=int, default=32, help="@serve.batch max size (every mode)")
    ap.add_argument("--batch-wait", type=float, default=0.0, help="@serve.batch wait (every mode)")
    ap.add_argument("--real", type=int, default=4, help="distinct real LoRA tenants the clones copy")
    ap.add_argument("--items", type=int, default=300, help="catalog size per tenant")
    ap.add_argument("--max-models", type=int, default=64, help="multiplex modes: tenants per replica")
    ap.add_argument("--port", type=int, default=18000)
    ap.add_argument("--ingress", nargs="+", default=[i for i in INGRESS if i != "haproxy" or shutil.which("haproxy")],
                    choices=INGRESS, help="proxy: Serve's HTTP proxy; direct: the replica's own port (throughput-optimized "
                    "Serve); haproxy: Ray's HAProxy on the Serve port (needs the haproxy binary; default when installed)")
    ap.add_argument("--direct-modes", nargs="+", default=list(DIRECT_MODES), choices=MODES, help="modes measured with direct ingress")
    ap.add_argument("--autoscale-steps", default="0.2:20,0.6:20,1.1:30,0.6:20,0.2:40",
                    help="fraction of the measured ort-shared-fp32 closed-8 rps : seconds, ...")
    ap.add_argument("--no-autoscale", action="store_true")
    ap.add_argument("--autoscale-only", action="store_true", help="re-run only the autoscaling part of an existing result")
    ap.add_argument("--quick", action="store_true", help="pipeline check: tenants 1 10, short loads and autoscale")
    ap.add_argument("--name", default=None)
    a = ap.parse_args(argv)
    if "haproxy" in a.ingress and not shutil.which("haproxy"):
        ap.error("--ingress haproxy needs the haproxy binary on PATH (e.g. apt-get install haproxy), or leave haproxy out")
    if a.quick:
        a.tenants, a.duration, a.slo_steps, a.slo_duration, a.autoscale_steps = [1, 10], 3.0, 3, 2.0, "0.3:5,1.0:8,0.3:7"
    name = a.name or ("serve_load_quick" if a.quick else "serve_load")
    return a, name


def run_loads(a: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, float], list]:
    """Every (tenant count, ingress, mode) load, back to back, then the autoscaling run:
    ``(rows, autoscale result, setup seconds, load averages)``."""
    load_avg = [os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    rows: list[dict[str, Any]] = []
    auto: dict[str, Any] | None = None
    try:
        root, backbone, sources, setup = build_world(work, a.real, a.items)
        roots = {"fp32": root, "int8": work / "root-int8"}
        merged = work / "merged"
        timer = RawTimer(roots, backbone, merged, sources)
        tenants: dict[str, Any] = {}
        for n in a.tenants:
            t0 = time.perf_counter()
            tenants = clone_tenants(list(roots.values()), merged, sources, n)
            tenants["__names__"] = sorted(k for k in tenants if k != "__names__")
            setup[f"clone_s_{n}"] = time.perf_counter() - t0
            for ingress in a.ingress:  # back to back per tenant count: every mode sees the same machine load
                modes = [m for m in a.modes if ingress == "proxy" or m in a.direct_modes]
                with serve_session(ingress, a.port):
                    for mode in modes:
                        rows += measure_mode(mode, n, tenants, roots, backbone, merged, timer, a, ingress)
                        load_avg.append(os.getloadavg())
        if not a.no_autoscale:
            with serve_session(autoscale_ingress(a), a.port):
                auto = run_autoscale(rows, root, tenants, a)
            load_avg.append(os.getloadavg())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows, auto, setup, load_avg


def protocol_of(a: argparse.Namespace, setup: dict[str, float], auto: dict[str, Any] | None, load_avg: list,
                wall_s: float) -> dict[str, Any]:
    """The ``protocol`` block of the results: what each column means and how it was measured."""
    return {
        "model": "default ModelConfig (d_model 64, 2 blocks, random init), LoRA rank 8 on every projection (random "
                 f"non-zero B), catalogs of {a.items} items; {a.real} real adapters, each published as a bundle (fp32 and "
                 "int8 catalogs) and exported once as a merged per-tenant ONNX model (export_merged_tenant_model)",
        "tenants": "N tenants t0000.. are FILE COPIES of the real artifacts (manifest tenant renamed): tenant count drives "
                   "caching, multiplex LRU and memory, not export time. Export cost per real tenant: merged "
                   f"{setup['merged_export_s_per_tenant']:.1f} s, bundle publish {setup['bundle_publish_s_per_tenant']:.1f} s",
        "load": f"closed-C: C closed-loop clients for {a.duration:g} s (closed-1: {a.duration / 2:g} s), <= {a.max_requests} "
                f"requests; open-slo-p99<={a.slo_ms:g}ms: highest Poisson rate with p99 <= {a.slo_ms:g} ms and 0 errors "
                f"(latency from the scheduled send time), bisection over [0, 1.2 x the best closed-loop rps] with "
                f"{a.slo_steps} probes of {a.slo_duration:g} s (its p50/p95/p99 are the best passing probe's, errors are "
                "summed over all probes). Client: one process, asyncio + aiohttp, bodies pre-serialized; client_cpu_frac = "
                "its CPU seconds per wall second. Uniform tenant per request, "
                f"{HIST}-item history, k=10; a response counts only if HTTP 200 with 10 items. Each mode: 2 s warm-up "
                "(non-sharded shared modes also GET every tenant once so all N bundles are resident)",
        "serve": f"local Ray (2 CPUs), HTTP proxy on 127.0.0.1; every mode @serve.batch max {a.max_batch}, wait "
                 f"{a.batch_wait:g} s. ort-shared-fp32/int8: serve_apps.recommender default layout = ONE 0.5-CPU "
                 "deployment (Recommender); ort-shared-fp32-2hop: Ingress 0.25 CPU -> Ranker 0.25 CPU; ort-shared-sharded: "
                 f"the same pair with multiplex (tenant = model id, {a.max_models} per replica); torch-/ort-merged-multiplex: "
                 f"one 0.5-CPU replica, FastAPI + @serve.multiplexed ({a.max_models} models), no Ingress hop. "
                 "ort-shared-int8 = int8 model + int8 catalogs + fp16 LoRA; every other shared mode fp32 throughout",
        "ingress": "how the load generator reached each app (row key ingress): proxy = Serve's HTTP proxy on 127.0.0.1 "
                   f"(Ray's default); direct = the ingress replica's own HTTP port (Serve's throughput-optimized mode, "
                   f"env {json.dumps(INGRESS_ENV['direct'])}, found with serve_apps.direct_ingress.http_targets); haproxy = Ray's "
                   f"HAProxy on the Serve port in front of those replica ports (env {json.dumps(INGRESS_ENV['haproxy'])}; "
                   f"haproxy {haproxy_version()}). direct/haproxy modes: {', '.join(a.direct_modes)}. Measured: "
                   f"{', '.join(a.ingress)}, each in its own Ray session, back to back per tenant count; cpu 'proxy' "
                   "counts the Python proxy actor and the haproxy process",
        "cpu_ms_per_request": "closed loops: CPU time (user + system) of the HTTP proxy process and of each deployment's "
                              "replica processes during the load, divided by the requests completed (psutil)",
        "rss_mb": "sum of the app's replica processes after the loads; model_rss_mb: the model-holding replica "
                  "(Recommender, Ranker or Model); bundle_kb_per_tenant: the registry's byte count per loaded tenant",
        "overhead_ratio": "end-to-end p50 / in-process median time of the bare model call (ORT session.run, or the torch "
                          "forward for torch-multiplex) for a batch of batch_median rows (the median batch the server ran in "
                          "that load); overhead_ratio_max_batch: the same p50 / the call for batch_max rows; "
                          "overhead_vs_rank: p50 / in-process rank_batch (ids -> rows, feed, run, top-k, answers)",
        "stages_p50_ms": "per-stage p50 inside the replica(s) (serve_apps/timing.py): asgi = the replica's ASGI app, "
                         "handler = route body, call = the Ranker call (local, or the Serve hop), queue = wait in "
                         "@serve.batch, thread = hop onto the worker thread, resolve/feed/ort/topk = rank_batch per batch",
        "autoscaling": "ort-shared-fp32 with serve_apps/config.yaml's Recommender options (0.5 CPU, 1-3 replicas) with "
                       "autoscaling overrides {overrides}, reached through the "
                       f"{autoscale_ingress(a)} ingress, open-loop steps as fractions of the measured ort-shared-fp32 "
                       f"{AUTOSCALE_REF} rps of that ingress; replicas from serve.status() every 1 s, p99 per 5 s window (by scheduled time)"
                       .replace("{overrides}", json.dumps(auto["overrides"]) if auto else "-"),
        "machine_load": f"load average (1/5/15 min) before/after each (tenants, mode): {[tuple(round(x, 1) for x in la) for la in load_avg]}; "
                        "the 2 cores are shared with other jobs: compare modes within a tenant count (run back to back)",
        "setup_s": {k: round(v, 1) for k, v in setup.items()},
        "wall_s": round(wall_s, 1),
    }


def write_serve_load(name: str, protocol: dict[str, Any], rows: list[dict[str, Any]], auto: dict[str, Any] | None,
                     slo_ms: float, tenant_counts: list[int]) -> None:
    """Results JSON + markdown + plots, with the targets and the autoscaling run added to the JSON."""
    from bench._results import RESULTS, write_results
    from rec.io.artifacts import atomic_write_bytes

    tgt = targets(rows, tenant_counts, slo_ms)
    pngs = plot_matrix(rows, name, RESULTS, slo_ms)
    if auto:
        pngs.append(plot_autoscale(auto, name, RESULTS))
    notes = notes_markdown(rows, tgt, auto, pngs)
    jpath = write_results(name, protocol, rows, COLUMNS, notes=notes)
    payload = json.loads(jpath.read_text())
    payload["targets"] = tgt
    payload["autoscaling"] = auto
    payload["plots"] = [p.name for p in pngs]
    atomic_write_bytes(jpath, json.dumps(payload, indent=2, default=str).encode())
    print(notes)
    print(f"wall {protocol['wall_s']} s")



def main(argv: list[str] | None = None) -> int:
    a, name = parse_args(argv)
    if a.autoscale_only:
        return autoscale_only(a, name)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    t_run = time.perf_counter()
    rows, auto, setup, load_avg = run_loads(a)
    protocol = protocol_of(a, setup, auto, load_avg, time.perf_counter() - t_run)
    write_serve_load(name, protocol, rows, auto, a.slo_ms, a.tenants)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
