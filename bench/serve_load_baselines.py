"""What the serving benchmark (bench/serve_load.py) compares against: the per-tenant-model
baselines (one Serve deployment holding one merged model per tenant through
``@serve.multiplexed``) and :class:`RawTimer`, the in-process time of the bare model call.

- ``torch``: the tenant's merged torch backbone (LoRA ``W + B A`` merged, prompt set);
- ``ort``: the per-tenant ONNX model of ``rec.export.onnx_export.export_merged_tenant_model``
  (adapter merged, catalog baked in), one ORT session each.

Serve batches per tenant here (``@serve.batch`` splits batches by multiplexed model id), routed by
the ``serve_multiplexed_model_id`` header the load generator sends.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bench.load_gen import HIST
from bench.serve_load_results import SHARED, VARIANT


def _rows(index: dict, history: list, max_len: int) -> list[int]:
    return [index[i] for i in history if i in index][-max_len:]


def load_merged_onnx(merged: str, tenant: str) -> tuple:
    """``(session, None, id -> row, ids)`` of a tenant's merged ONNX model (catalog baked in)."""
    from rec.io.artifacts import read_manifest
    from rec.serving.runtime import make_session

    folder = Path(merged) / tenant
    read_manifest(folder)  # checksums, as a loader of published artifacts would
    ids = json.loads((folder / "item_ids.json").read_text())
    return make_session(folder / "model.onnx", intra_op_threads=1), None, {x: j for j, x in enumerate(ids)}, ids


def load_merged_torch(base, root: str, tenant: str) -> tuple:  # noqa: ANN001 - a LoadedBackbone
    """``(model, catalog, id -> row, ids)``: the base backbone with the tenant's bundle merged in
    (LoRA ``W + B A``, prompt set) and its catalog as a tensor."""
    import copy

    import torch

    from rec.serving.bundles import load_tenant_bundle
    from rec.serving.store import ArtifactRoot

    store = ArtifactRoot(root)
    b = load_tenant_bundle(store.version_dir(tenant, store.current_version(tenant)))
    model = copy.deepcopy(base.model).eval()
    with torch.no_grad():
        for name, (a, bm) in b.lora.items():
            model.get_submodule(name).weight += torch.from_numpy(bm @ a)
        if b.prompt is not None:
            model.prompt = torch.nn.Parameter(torch.from_numpy(b.prompt), requires_grad=False)
    ids = b.item_ids.tolist()
    return model, torch.from_numpy(b.catalog_fp32()), {x: j for j, x in enumerate(ids)}, ids


def score_one_tenant_batch(kind: str, loaded: tuple, reqs: list, max_len: int) -> list[dict]:
    """Answers (top-k ids and scores) for requests ``(loaded model, history, k)`` of ONE tenant."""
    model, catalog, index, ids = loaded
    rows = [_rows(index, h, max_len) for _, h, _ in reqs]
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


def multiplex_app(kind: str, root: str, backbone: str, merged: str, max_models: int, max_batch: int,
                  batch_wait: float):  # noqa: ANN201
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
            self.batched.set_max_batch_size(max_batch)
            self.batched.set_batch_wait_timeout_s(batch_wait)

            async def load(tenant: str):  # noqa: ANN202 - a plain function: Serve keeps its LRU on it
                return load_merged_onnx(merged, tenant) if kind == "ort" else load_merged_torch(self.base, root, tenant)

            self.load = serve.multiplexed(max_num_models_per_replica=max_models)(load)

        @api.post("/v1/tenants/{tenant_id}/recommendations")
        async def recommend(self, tenant_id: str, body: dict) -> dict:
            m = await self.load(serve.get_multiplexed_model_id() or tenant_id)
            return await self.batched((m, body["history"], int(body.get("k", 10))))

        @api.get("/stats")
        async def stats_route(self) -> dict:
            return await self.stats()

        async def stats(self, reset: bool = False) -> dict:
            out = {"batches": [(b, 1) for b in self.batches[-4096:]], "timings": {}}
            if reset:
                self.batches = []
            return out

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
        async def batched(self, reqs: list) -> list:
            self.batches.append(len(reqs))
            return score_one_tenant_batch(kind, reqs[0][0], reqs, self.max_len)  # one tenant per batch (split by model id)

    return PerTenantModels.bind()


class RawTimer:
    """In-process time (1 thread, median of 30) of the bare model call for a batch of ``b`` rows
    (``ms``: ORT ``session.run`` or the torch forward), and for shared modes of the whole
    replica-side ranking of ``b`` requests (``rank_ms``: ``rank_batch`` = ids -> rows, feed,
    session.run, top-k, answer dicts)."""

    def __init__(self, roots: dict[str, Path], backbone: Path, merged: Path, sources: list[str]) -> None:
        from rec.serving.bundles import load_tenant_bundle
        from rec.serving.store import ArtifactRoot

        self.roots, self.backbone, self.merged, self.sources = roots, backbone, merged, sources
        store = ArtifactRoot(roots["fp32"])
        self.bundles = [load_tenant_bundle(store.version_dir(t, 1)) for t in sources]
        self.cache: dict[tuple[str, str, int], float] = {}

    @staticmethod
    def _median(fn, n: int = 30) -> float:  # noqa: ANN001
        fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1000)

    def _shared(self, mode: str):  # noqa: ANN202
        from rec.serving.runtime import SharedRanker
        from rec.serving.store import ArtifactRoot

        variant = VARIANT[mode]
        return SharedRanker(ArtifactRoot(self.roots[variant]).model_dir, variant=variant)

    def ms(self, mode: str, b: int) -> float:
        key = ("run", mode, b)
        if key in self.cache:
            return self.cache[key]
        rows = [np.arange(HIST) % len(bd.catalog) for bd in self.bundles]
        if mode in SHARED:
            r = self._shared(mode)
            feed = r.build_feed([rows[i % len(rows)] for i in range(b)], [self.bundles[i % len(rows)] for i in range(b)]).inputs
            ms = self._median(lambda: r.raw_run(feed))
        elif mode == "ort-merged-multiplex":
            from rec.serving.runtime import make_session

            sess = make_session(self.merged / sorted(p.name for p in self.merged.iterdir())[0] / "model.onnx", intra_op_threads=1)
            feed = {"items": np.tile(rows[0], (b, 1)).astype(np.int64), "pad": np.zeros((b, HIST), bool)}
            ms = self._median(lambda: sess.run(["scores"], feed))
        else:
            import torch

            from rec.training.checkpoint import load_backbone

            torch.set_num_threads(1)
            m = load_backbone(self.backbone).model
            cat = torch.from_numpy(self.bundles[0].catalog_fp32())
            idx, pad = torch.from_numpy(np.tile(rows[0], (b, 1))), torch.zeros(b, HIST, dtype=torch.bool)

            def run() -> None:
                with torch.no_grad():
                    m.scores(m.user_vector(cat[idx], pad), cat)

            ms = self._median(run)
        self.cache[key] = ms
        return ms

    def rank_ms(self, mode: str, b: int) -> float | None:
        if mode not in SHARED:
            return None
        key = ("rank", mode, b)
        if key not in self.cache:
            import functools

            from rec.serving.bundles import load_tenant_bundle
            from rec.serving.ranking import RankRequest, rank_batch
            from rec.serving.registry import TenantRegistry
            from rec.serving.store import ArtifactRoot

            r = self._shared(mode)
            dtype = "fp16" if VARIANT[mode] == "int8" else "fp32"
            reg = TenantRegistry(ArtifactRoot(self.roots[VARIANT[mode]]), functools.partial(load_tenant_bundle, adapter_dtype=dtype))
            reqs = [RankRequest(self.sources[i % len(self.sources)], tuple(self.bundles[i % len(self.bundles)].item_ids[:HIST]), 10)
                    for i in range(b)]
            self.cache[key] = self._median(lambda: rank_batch(r, reg, reqs, r.max_len, "m"))
        return self.cache[key]
