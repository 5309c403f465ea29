"""The Ranker: one ONNX Runtime session shared by every tenant, plus the tenant registry.

``@serve.batch`` collects requests of ANY tenants into one batch and ``rec.serving.rank_batch``
scores all its warm rows with one model call, each row carrying its own tenant's adapter tensors.

:class:`TenantRanker` is a plain class, used two ways (``serve_apps.recommender.build_app``):

- default: inside the HTTP deployment itself (``Recommender``), so a request goes proxy ->
  one replica, with no Serve hop between validation and the model;
- ``multiplex: true``: as its own deployment (:data:`Ranker`) behind the ``Ingress``; the ingress
  tags each call with the tenant id as the multiplexed model id, so Serve routes a tenant to the
  replicas that already hold it (tenant sharding); Serve then batches per tenant. Serve's
  multiplex LRU only tracks which tenant ids a replica reports for routing (it holds no bundle);
  the registry's own LRU, bounded to the same ``max_tenants_per_replica``, evicts the bundles.

Per-stage timings (``serve_apps.timing``) are recorded only when ``args.record_timings`` is set.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import serve

from rec.io.artifacts import ArtifactError
from rec.serving.bundles import TenantBundle, load_tenant_bundle
from rec.serving.events import EventLog
from rec.serving.live_feedback import LiveFeedback
from rec.serving.ranking import RankError, RankRequest, rank_batch
from rec.serving.registry import TenantRegistry, TenantUnavailable, UnknownTenant
from rec.serving.runtime import VARIANTS, SharedRanker
from rec.serving.store import ArtifactRoot
from serve_apps.args import RecommenderArgs
from serve_apps.timing import Timings

__all__ = ["Ranker", "TenantRanker", "model_info"]


def model_info(ranker: SharedRanker) -> dict[str, Any]:
    """What a replica reports about its shared model: version (checksum prefix of the served
    variant), the backbone it was exported from, the longest history it reads."""
    files = ranker.manifest.get("files", {})
    sha = (files.get(VARIANTS[ranker.variant]) or {}).get("sha256", "")
    return {
        "model_version": f"{ranker.variant}-{sha[:12]}",
        "backbone_checksum": ranker.manifest.get("backbone_checksum"),
        "max_len": int(ranker.max_len),
    }


class TenantRanker:
    """Scores recommendation requests of any tenant (see module doc).

    Args:
        args: :class:`serve_apps.args.RecommenderArgs` as a dict (what the Serve YAML holds).
        bundle_loader: ``path -> TenantBundle``; default ``rec.serving.bundles.load_tenant_bundle``
            (catalog as stored, LoRA in ``args.adapter_dtype``).
        ranker_factory: ``(model_dir, intra_op_threads, variant) -> SharedRanker``.
        timings: Where to record per-stage timings; default a new :class:`Timings` when
            ``args.record_timings``, else None (nothing recorded). The single-hop ingress passes its own.
    """

    def __init__(
        self,
        args: dict[str, Any],
        bundle_loader: Callable[[Path], TenantBundle] | None = None,
        ranker_factory: Callable[..., SharedRanker] | None = None,
        timings: Timings | None = None,
    ) -> None:
        self.args = RecommenderArgs.model_validate(args)
        self.store = ArtifactRoot(self.args.artifact_root)
        self.ranker = (ranker_factory or SharedRanker)(
            self.store.model_dir, intra_op_threads=self.args.intra_op_threads, variant=self.args.model_variant
        )
        self.info = model_info(self.ranker)
        self.registry = TenantRegistry(
            self.store,
            bundle_loader or functools.partial(load_tenant_bundle, adapter_dtype=self.args.adapter_dtype),
            max_bytes=int(self.args.tenant_cache_mb * (1 << 20)),
            poll_interval_s=self.args.poll_interval_s,
            validate=self._check_backbone,
            max_tenants=self.args.max_tenants_per_replica if self.args.multiplex else None,
        )
        self.timings = timings if timings is not None else (Timings() if self.args.record_timings else None)
        self.feedback = (LiveFeedback(self.store.tenant_dir, EventLog(self.store.events_dir), self.args.poll_interval_s)
                         if self.args.live_feedback else None)
        self._batched.set_max_batch_size(self.args.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self.args.batch_wait_timeout_s)
        self.batches: deque[tuple[int, int]] = deque(maxlen=4096)  # (rows, tenants) of recent batches
        self._pin = None
        if self.args.multiplex:
            registry = self.registry

            async def pin_tenant(tenant: str) -> str:
                # Serve keeps the returned id in its routing LRU; the bundle stays in the registry,
                # whose own LRU (same bound) evicts it, so nothing is released through __del__.
                await asyncio.to_thread(registry.get, tenant)
                return tenant

            self._pin = serve.multiplexed(max_num_models_per_replica=self.args.max_tenants_per_replica)(pin_tenant)

    def _check_backbone(self, bundle: TenantBundle) -> None:
        want, got = self.info["backbone_checksum"], bundle.manifest.get("backbone_checksum")
        if want and got != want:
            raise ArtifactError(
                f"bundle of {bundle.tenant!r} was exported from backbone {str(got)[:12]}, the served model from {str(want)[:12]}"
            )

    async def _maybe_pin(self, tenant: str) -> dict[str, Any] | None:
        if self._pin is None:
            return None
        try:
            await self._pin(serve.get_multiplexed_model_id() or tenant)
        except UnknownTenant as e:
            return RankError(404, e.args[0]).to_dict()
        except TenantUnavailable as e:
            return RankError(503, str(e)).to_dict()
        return None

    async def recommend(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request (validated by the ingress) -> response dict or ``{"error": {status, detail}}``."""
        t0 = time.perf_counter() if self.timings is not None else 0.0
        err = await self._maybe_pin(request["tenant"])
        if err is not None:
            return err
        req = RankRequest(
            tenant=request["tenant"],
            history=tuple(request["history"]),
            k=int(request["k"]),
            exclude_history=bool(request["exclude_history"]),
            candidates=None if request.get("candidates") is None else tuple(request["candidates"]),
            user_id=request.get("user_id"),
        )
        out = await self._batched((req, time.perf_counter() if self.timings is not None else 0.0))
        if self.timings is not None:
            self.timings.add("ranker", time.perf_counter() - t0)
        return out

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _batched(self, items: list[tuple[RankRequest, float]]) -> list[dict[str, Any]]:
        t0 = time.perf_counter() if self.timings is not None else 0.0
        requests = [r for r, _ in items]
        if self.timings is not None:
            for _, entered in items:
                self.timings.add("queue", t0 - entered)
        tenants = {r.tenant for r in requests}
        self.batches.append((len(requests), len(tenants)))
        # Every tenant held and current: pure compute (a few ms), run right here. A worker-thread hop
        # cost 0.10-0.14 ms of CPU per request and widened tail latency (GIL hand-offs with the HTTP loop,
        # bench/README.md). A batch that needs a load (cold tenant, new version) goes to a thread so
        # disk reads and checksums never block the loop.
        served = self.registry.cached(tenants)
        if served is not None:
            out = self._rank(requests, t0, served)
        else:
            out = await asyncio.to_thread(self._rank, requests, t0)
        return [r.to_dict() if isinstance(r, RankError) else r for r in out]

    def _rank(self, requests: list[RankRequest], queued: float, served: dict | None = None) -> list[dict[str, Any] | RankError]:
        if self.timings is None:
            return rank_batch(self.ranker, self.registry, requests, self.info["max_len"], self.info["model_version"],
                              resolved=served, feedback=self.feedback)
        self.timings.add("thread" if served is None else "inline", time.perf_counter() - queued)
        t: dict[str, float] = {}
        out = rank_batch(self.ranker, self.registry, requests, self.info["max_len"], self.info["model_version"], timings=t,
                         resolved=served, feedback=self.feedback)
        for stage, sec in t.items():
            self.timings.add(stage.removesuffix("_s"), sec)
        return out

    async def tenant_status(self, tenant: str) -> dict[str, Any]:
        """Status of ``tenant`` as this replica serves it, or ``{"error": ...}``."""
        err = await self._maybe_pin(tenant)
        if err is not None:
            return err
        try:
            st = await asyncio.to_thread(self.registry.status, tenant)
            served = self.registry.get(tenant)
        except UnknownTenant as e:
            return RankError(404, e.args[0]).to_dict()
        except TenantUnavailable as e:
            return RankError(503, str(e)).to_dict()
        except ArtifactError as e:
            return RankError(503, str(e)).to_dict()
        method = served.bundle.method
        published = st["published_version"]
        return {
            "tenant": tenant,
            "adapter_version": f"v{served.version}",
            "published_version": None if published is None else f"v{published}",
            "method": method,
            "zero_shot": method == "zero-shot",
            "catalog_size": served.bundle.num_items,
            "model_version": self.info["model_version"],
            "fallback_reason": st["fallback_reason"],
            "failed_versions": st["failed_versions"],
        }

    async def ready(self) -> dict[str, Any]:
        return {"model_version": self.info["model_version"], "tenants_loaded": len(self.registry.loaded())}

    async def stats(self, reset: bool = False) -> dict[str, Any]:
        """Replica internals for tests/benchmarks: recent batches as (rows, tenants), loaded tenants
        (bytes each), registry counters, the replica's process id, per-stage timings (``serve_apps.timing``; empty unless
        ``record_timings``); ``reset`` clears batches and timings afterwards."""
        out = {"batches": list(self.batches), "loaded": self.registry.loaded(), "loads": self.registry.loads,
               "pid": os.getpid(),  # which replica answered (fault tests and bench/chaos.py kill it)
               "timings": self.timings.summary() if self.timings is not None else {}}
        if reset:
            self.batches.clear()
            if self.timings is not None:
                self.timings.clear()
        return out


Ranker = serve.deployment(name="Ranker", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)(TenantRanker)
"""The Ranker as its own deployment (the ``multiplex: true`` layout, behind ``Ingress``)."""
