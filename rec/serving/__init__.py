"""The serving runtime, usable without Ray Serve: numpy, onnxruntime and safetensors only.

Replicas import this package; it never imports torch, peft, Ray Train or ``rec.export`` (a test
checks it in a fresh interpreter). Publishing a tenant exports, so it lives in
``rec.export.publish`` (``rec publish``/``rec rollback``).

- :mod:`rec.serving.store`: the artifact root layout and atomic version pointers.
- :mod:`rec.serving.bundles`: ``TenantBundle`` (catalog as stored, LoRA tensors, numpy item-id
  index) and ``load_tenant_bundle``, which verifies a bundle folder reading each file once.
- :mod:`rec.serving.feed`: ``build_feed``, one exact feed for a mixed-tenant batch.
- :mod:`rec.serving.runtime`: ``SharedRanker`` (the shared ONNX Runtime session, ``top_k``) and
  ``make_session``.
- :mod:`rec.serving.registry`: memory-bounded LRU of tenant bundles with hot reload and fallback;
  loads run outside its lock, one per tenant at a time.
- :mod:`rec.serving.ranking`: ``rank_batch``, one shared-model call for a mixed-tenant batch.
- :mod:`rec.serving.auth`: per-tenant API keys stored as scrypt hashes.
- :mod:`rec.serving.events`: the durable, day-partitioned event log (fsynced; idempotency keys;
  group-committed impression records).
- :mod:`rec.serving.policies`: exploration policies (greedy, epsilon, Thompson, LinTS, LinUCB)
  re-ranking the model's top-N, with per-position propensities.
- :mod:`rec.serving.online_prior`: decayed per-item event counts blended into catalog scores.
- :mod:`rec.serving.live_feedback`: each tenant's policy state and prior, learned by tailing its log.
- :mod:`rec.serving.errors`: ``FeedError``, ``AdapterShapeError``.

The Serve application is in ``serve_apps/`` (see docs/serving.md).
"""

from rec.serving.auth import ApiKeyChecker, create_api_key, revoke_api_keys
from rec.serving.bundles import ItemIds, TenantBundle, load_tenant_bundle
from rec.serving.errors import AdapterShapeError, FeedError
from rec.serving.events import EventLog
from rec.serving.feed import Feed, build_feed
from rec.serving.ranking import RankError, RankRequest, rank_batch
from rec.serving.registry import ServedTenant, TenantRegistry, TenantUnavailable, UnknownTenant
from rec.serving.runtime import SharedRanker, make_session
from rec.serving.store import ArtifactRoot

__all__ = [
    "AdapterShapeError",
    "ApiKeyChecker",
    "ArtifactRoot",
    "EventLog",
    "Feed",
    "FeedError",
    "ItemIds",
    "RankError",
    "RankRequest",
    "ServedTenant",
    "SharedRanker",
    "TenantBundle",
    "TenantRegistry",
    "TenantUnavailable",
    "UnknownTenant",
    "build_feed",
    "create_api_key",
    "load_tenant_bundle",
    "make_session",
    "rank_batch",
    "revoke_api_keys",
]
