"""Serving load benchmark: one shared ONNX model with per-row adapters vs one model per tenant.

Modes (each a Serve app on 127.0.0.1, driven over HTTP by a closed loop of ``load`` clients that
pick a tenant uniformly at random per request):

- ``ort-shared-fp32`` / ``ort-shared-int8``: the real app (``serve_apps.recommender``): one ORT
  session, ``@serve.batch`` across tenants, tenant bundles in an LRU.
- ``torch-multiplex``: the classic design: ``@serve.multiplexed`` holds one merged torch backbone
  per tenant (LoRA ``W + B A`` merged, prompt set), batches per tenant (Serve splits batches by
  model id), routed by the ``serve_multiplexed_model_id`` header.

Tenants: ``--real`` synthetic tenants get real LoRA adapters (random, non-zero) published with
``rec.serving.publish_tenant``; the ``N`` benchmark tenants are clones of those bundles (files
copied, the manifest's tenant renamed), so tenant count drives cache/multiplex behaviour without
N exports. ``overhead_ratio`` = end-to-end p50 / p50 of the bare model call for one row in-process
(ORT ``raw_run`` or torch forward): what HTTP + Serve + batching add.

    .venv/bin/python -m bench.serve_load --tenants 1 100 1000 --duration 20 --load 8
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

MODES = ("ort-shared-fp32", "ort-shared-int8", "torch-multiplex")
COLUMNS = ["mode", "tenants", "load", "rps", "p50_ms", "p95_ms", "p99_ms", "errors", "rss_mb", "overhead_ratio"]


# --- setup ---------------------------------------------------------------------------------------
def build_world(work: Path, real: int, items: int, seed: int = 0) -> tuple[Path, Path, list[str]]:
    """Backbone (random init, default model size), serving root with ``real`` LoRA tenants."""
    import torch

    from rec.adaptation.artifacts import save_adapter
    from rec.adaptation.methods import prepare_model
    from rec.config import AdaptConfig, load_config
    from rec.data.synthetic import generate_tenants
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
    ensure_serving_model(root, loaded, quantize=True)
    acfg = AdaptConfig(method="lora", output_root=str(work / "adapters"))
    for t in tenants:
        peft_model = prepare_model(loaded.model, acfg)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
        adapter = save_adapter(peft_model, acfg, t.name, acfg.output_root, {"backbone_checksum": loaded.checksum})
        emb = encode_items(list(t.items.text), cfg.text)
        publish_tenant(root, loaded, t, emb, adapter)
    return root, work / "backbone", [t.name for t in tenants]


def clone_tenants(root: Path, sources: list[str], n: int) -> dict[str, list[str]]:
    """``n`` tenants ``t0000..`` served from copies of the source bundles; returns their item ids."""
    from rec.io.artifacts import atomic_write_json
    from rec.serving.store import ArtifactRoot

    store = ArtifactRoot(root)
    ids = {}
    for i in range(n):
        src = sources[i % len(sources)]
        name = f"t{i:04d}"
        dst = store.version_dir(name, 1)
        if not dst.exists():
            shutil.copytree(store.version_dir(src, 1), dst)
            manifest = json.loads((dst / "manifest.json").read_text())
            manifest["tenant"] = name
            atomic_write_json(dst / "manifest.json", manifest)
            store.set_current(name, 1)
        ids[name] = json.loads((dst / "item_ids.json").read_text())
    return ids


# --- the per-tenant-model baseline ---------------------------------------------------------------
def torch_multiplex_app(root: str, backbone: str, max_models: int):  # noqa: ANN201
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()

    @serve.deployment(name="TorchMultiplex", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
    @serve.ingress(api)
    class TorchMultiplex:
        def __init__(self) -> None:
            import torch

            from rec.training.checkpoint import load_backbone

            torch.set_num_threads(1)
            self.base = load_backbone(backbone)

            async def load(tenant: str):  # noqa: ANN202 - a plain function: Serve keeps its LRU on it
                return self._merged(tenant)

            self.load = serve.multiplexed(max_num_models_per_replica=max_models)(load)

        def _merged(self, tenant: str):  # noqa: ANN202
            import copy

            import torch

            from rec.export.tenant_bundle import load_tenant_bundle
            from rec.serving.store import ArtifactRoot

            store = ArtifactRoot(root)
            b = load_tenant_bundle(store.version_dir(tenant, store.current_version(tenant)))
            model = copy.deepcopy(self.base.model).eval()
            with torch.no_grad():
                for name, (a, bm) in b.lora.items():
                    lin = model.get_submodule(name)
                    lin.weight += torch.from_numpy(bm @ a)
                if b.prompt is not None:
                    model.prompt = torch.nn.Parameter(torch.from_numpy(b.prompt), requires_grad=False)
            return model, torch.from_numpy(b.catalog), b.item_index, b.item_ids

        @api.post("/v1/tenants/{tenant_id}/recommendations")
        async def recommend(self, tenant_id: str, body: dict) -> dict:
            m = await self.load(serve.get_multiplexed_model_id() or tenant_id)
            return await self.batched((m, body["history"], int(body.get("k", 10))))

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
        async def batched(self, reqs: list) -> list:
            import torch

            (model, catalog, index, ids) = reqs[0][0]  # one tenant per batch (split by model id)
            rows = [[index[i] for i in h if i in index][-model.max_len:] for _, h, _ in reqs]
            T = max(1, max(len(r) for r in rows))
            idx = torch.zeros(len(rows), T, dtype=torch.long)
            pad = torch.ones(len(rows), T, dtype=torch.bool)
            for j, r in enumerate(rows):
                if r:
                    idx[j, T - len(r):] = torch.tensor(r)
                    pad[j, T - len(r):] = False
            with torch.no_grad():
                scores = model.scores(model.user_vector(catalog[idx], pad), catalog)
            out = []
            for j, (_, _, k) in enumerate(reqs):
                top = torch.topk(scores[j], k)
                out.append({"items": [{"item_id": ids[i], "score": float(s)} for s, i in zip(top.values, top.indices.tolist())]})
            return out

    return TorchMultiplex.bind()


# --- load ----------------------------------------------------------------------------------------
def drive(url: str, tenants: dict[str, list[str]], load: int, duration: float, header: bool, seed: int = 0) -> dict[str, Any]:
    import requests

    names = sorted(tenants)
    lat: list[float] = []
    errors = [0]
    stop = time.perf_counter() + duration
    lock = threading.Lock()

    def client(c: int) -> None:
        rng = np.random.default_rng([seed, c])
        with requests.Session() as s:
            while time.perf_counter() < stop:
                t = names[rng.integers(len(names))]
                hist = [tenants[t][i] for i in rng.integers(0, len(tenants[t]), 20)]
                headers = {"serve_multiplexed_model_id": t} if header else {}
                t0 = time.perf_counter()
                try:
                    r = s.post(f"{url}/v1/tenants/{t}/recommendations", json={"history": hist, "k": 10}, headers=headers, timeout=60)
                    ok = r.status_code == 200
                except requests.RequestException:
                    ok = False
                with lock:
                    (lat.append(time.perf_counter() - t0) if ok else errors.__setitem__(0, errors[0] + 1))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(load)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000 if lat else np.array([np.nan])
    return {"rps": len(lat) / wall, "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "errors": errors[0]}


def replicas_rss_mb(app: str) -> float:
    import psutil

    total = 0
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if f"ServeReplica:{app}:" in cmd:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    return round(total / 2**20, 1)


def bare_model_ms(mode: str, root: Path, backbone: Path) -> float:
    """p50 of the model call alone for one 20-item row, in this process (1 thread)."""
    from rec.export.runtime import SharedRanker
    from rec.export.tenant_bundle import load_tenant_bundle
    from rec.serving.store import ArtifactRoot

    store = ArtifactRoot(root)
    t = store.tenants()[0]
    b = load_tenant_bundle(store.version_dir(t, 1))
    rows = np.arange(20) % len(b.catalog)
    times = []
    if mode.startswith("ort"):
        r = SharedRanker(store.model_dir, variant=mode.rsplit("-", 1)[1])
        feed = r.build_feed([rows], [b]).inputs
        for _ in range(200):
            t0 = time.perf_counter()
            r.raw_run(feed)
            times.append(time.perf_counter() - t0)
    else:
        import torch

        from rec.training.checkpoint import load_backbone

        torch.set_num_threads(1)
        m = load_backbone(backbone).model
        cat = torch.from_numpy(b.catalog)
        idx, pad = torch.from_numpy(rows)[None], torch.zeros(1, 20, dtype=torch.bool)
        with torch.no_grad():
            for _ in range(200):
                t0 = time.perf_counter()
                m.scores(m.user_vector(cat[idx], pad), cat)
                times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--tenants", nargs="+", type=int, default=[1, 100, 1000])
    ap.add_argument("--load", nargs="+", type=int, default=[8], help="concurrent closed-loop clients")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per (mode, tenants, load)")
    ap.add_argument("--real", type=int, default=4, help="distinct real LoRA tenants the clones copy")
    ap.add_argument("--items", type=int, default=300, help="catalog size per tenant")
    ap.add_argument("--max-models", type=int, default=64, help="torch-multiplex: tenants per replica")
    ap.add_argument("--name", default="serve_load")
    a = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from bench._results import write_results
    from rec.ray_session import LOCAL_RUNTIME_ENV
    from serve_apps.recommender import build_app

    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    rows = []
    try:
        root, backbone, sources = build_world(work, a.real, a.items)
        bare = {m: bare_model_ms(m, root, backbone) for m in a.modes}
        ray.init(num_cpus=2, include_dashboard=False, runtime_env=LOCAL_RUNTIME_ENV, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": 18000})
        for n in a.tenants:
            tenants = clone_tenants(root, sources, n)
            for mode in a.modes:
                app = f"bench-{mode}-{n}"
                if mode == "torch-multiplex":
                    serve.run(torch_multiplex_app(str(root), str(backbone), a.max_models), name=app, route_prefix=f"/{app}")
                else:
                    args = {"artifact_root": str(root), "model_variant": mode.rsplit("-", 1)[1], "tenant_cache_mb": 1024}
                    serve.run(build_app(args), name=app, route_prefix=f"/{app}")
                url = f"http://127.0.0.1:18000/{app}"
                for load in a.load:
                    drive(url, tenants, load, min(3.0, a.duration), header=mode == "torch-multiplex")  # warm-up
                    res = drive(url, tenants, load, a.duration, header=mode == "torch-multiplex")
                    row = {"mode": mode, "tenants": n, "load": load, **res, "rss_mb": replicas_rss_mb(app),
                           "overhead_ratio": res["p50_ms"] / bare[mode]}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                serve.delete(app)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    protocol = {
        "model": "default ModelConfig (random init), LoRA rank 8 on every projection, catalogs of "
                 f"{a.items} items; {a.real} real adapters cloned to N tenants",
        "load": f"closed loop, {a.load} clients, uniform tenant per request, 20-item history, k=10, "
                f"{a.duration} s after a warm-up",
        "serve": "local Ray (2 CPUs); ort-shared: Ingress 0.25 CPU + Ranker 0.25 CPU, batch 16 / 5 ms; "
                 "torch-multiplex: one 0.5-CPU replica, batch 16 / 5 ms per tenant",
        "rss_mb": "sum of the app's replica processes after the run",
        "overhead_ratio": "end-to-end p50 / in-process p50 of the bare model call for one row",
    }
    write_results(a.name, protocol, rows, COLUMNS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
