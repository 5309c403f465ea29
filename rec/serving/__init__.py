"""Library side of multi-tenant serving, usable without Ray Serve.

- :mod:`rec.serving.store`: the artifact root layout and atomic version pointers.
- :mod:`rec.serving.publish`: ``publish_tenant`` / ``rollback_tenant`` (``rec publish``/``rollback``).
- :mod:`rec.serving.registry`: memory-bounded LRU of tenant bundles with hot reload and fallback.
- :mod:`rec.serving.bundles`: the compact in-memory bundle the LRU holds (int8/fp16 catalog as
  stored, fp16 LoRA option, numpy item-id index).
- :mod:`rec.serving.ranking`: ``rank_batch``, one shared-model call for a mixed-tenant batch.
- :mod:`rec.serving.auth`: per-tenant API keys stored as scrypt hashes.
- :mod:`rec.serving.events`: the durable (fsynced) feedback log.

The Serve application is in ``serve_apps/`` (see docs/serving.md).
"""

from rec.serving.auth import ApiKeyChecker, create_api_key, revoke_api_keys
from rec.serving.bundles import ItemIds, ServingBundle, load_serving_bundle
from rec.serving.events import EventLog
from rec.serving.publish import PublishResult, ensure_serving_model, publish_tenant, rollback_tenant
from rec.serving.ranking import RankError, RankRequest, rank_batch
from rec.serving.registry import ServedTenant, TenantRegistry, TenantUnavailable, UnknownTenant
from rec.serving.store import ArtifactRoot

__all__ = [
    "ArtifactRoot",
    "ApiKeyChecker",
    "EventLog",
    "ItemIds",
    "PublishResult",
    "RankError",
    "RankRequest",
    "ServedTenant",
    "ServingBundle",
    "TenantRegistry",
    "TenantUnavailable",
    "UnknownTenant",
    "create_api_key",
    "ensure_serving_model",
    "load_serving_bundle",
    "publish_tenant",
    "rank_batch",
    "revoke_api_keys",
    "rollback_tenant",
]
