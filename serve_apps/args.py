"""Typed arguments of the recommender Serve application (the ``args:`` block of config.yaml).

The same model validates ``serve run``, ``serve deploy`` and a KubeRay RayService's
``serveConfigV2``: a typo'd key is an error that names it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rec.io.formats import ADAPTER_DTYPES, MODEL_VARIANTS

__all__ = ["RecommenderArgs", "Limits", "Quota", "RetryPolicy"]


class Limits(BaseModel):
    """Bounds on what one request may ask for (larger requests get HTTP 413/422)."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(65536, ge=1024, description="request body size; larger -> 413")
    max_history: int = Field(200, ge=1, description="history ids per request (the model reads the last max_len)")
    max_k: int = Field(100, ge=1)
    max_candidates: int = Field(1000, ge=1)
    max_events: int = Field(100, ge=1, description="feedback events per request")
    max_item_id_length: int = Field(128, ge=20, description="longest item id; >= 20 so any 64-bit integer id fits")


class Quota(BaseModel):
    """Per-tenant request quota of each ingress replica: a token bucket per tenant (429 beyond it).

    The bucket is per replica, so with N ingress replicas a tenant may get up to N times the rate.
    """

    model_config = ConfigDict(extra="forbid")

    requests_per_s: float | None = Field(
        None, gt=0, description="sustained requests per second per tenant and replica; None = no quota")
    burst: int = Field(100, ge=1, description="bucket size: requests a tenant may send at once after being idle")


class RetryPolicy(BaseModel):
    """How the ingress retries an idempotent call (recommendations, status) whose Ranker replica
    died or is draining, in the ``Ingress -> Ranker`` layout. Writes (events) are never retried here."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(3, ge=1, le=10, description="calls per request, the first included")
    budget_s: float = Field(5.0, gt=0, description="no new attempt starts later than this after the first")
    backoff_s: float = Field(0.05, ge=0, description="wait before a retry (doubles each time)")
    retry_after_s: int = Field(1, ge=1, description="Retry-After of the 503 sent when no attempt is left")


class RecommenderArgs(BaseModel):
    """Arguments of :func:`serve_apps.recommender.build_app`."""

    model_config = ConfigDict(extra="forbid")

    artifact_root: str = Field(description="serving artifact root: model/ + tenants/<t>/v<N> (see rec.serving.store)")
    model_variant: Literal[MODEL_VARIANTS] = "fp32"  # type: ignore[valid-type]
    adapter_dtype: Literal[ADAPTER_DTYPES] = Field(  # type: ignore[valid-type]
        "fp32", description="dtype of LoRA tensors held per tenant (fp16 halves them; scores move by ~1e-4)")
    intra_op_threads: int = Field(1, ge=1, le=64, description="ONNX Runtime threads per Ranker replica")
    max_batch_size: int = Field(32, ge=1, le=1024, description="@serve.batch size across tenants")
    batch_wait_timeout_s: float = Field(
        0.0, ge=0.0, le=1.0, description="0: never wait for company; batches form from requests queued while the model runs")
    tenant_cache_mb: float = Field(256.0, gt=0.0, description="per-replica budget for loaded tenant bundles (LRU)")
    poll_interval_s: float = Field(1.0, ge=0.0, description="how often a replica re-checks a tenant's version pointer")
    multiplex: bool = Field(False, description="shard tenants over Ranker replicas with @serve.multiplexed (tenant id = model id)")
    max_tenants_per_replica: int = Field(64, ge=1, description="multiplex mode: tenants held per replica before LRU unload")
    require_api_keys: bool = Field(False, description="True: tenants without keys are closed; False: keys are per-tenant opt-in")
    record_timings: bool = Field(
        False, description="record per-stage request timings in the replica (stats(); for benchmarks, off in production)")
    live_feedback: bool = Field(
        True, description="learn each tenant's exploration policy and online prior from its event log (rec.serving.live_feedback)")
    log_impressions: bool = Field(
        True, description="append every answer's impression record (request id, items, propensities) to the tenant's log before replying")
    export_metrics: bool = Field(
        True, description="per-tenant requests, latency, impressions, events, version and policy as Ray metrics (serve_apps.metrics)")
    limits: Limits = Field(default_factory=Limits)
    quota: Quota = Field(default_factory=Quota)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

