"""Per-tenant request quotas in Serve's HTTP proxy: a flood answered 429 before it costs a replica hop.

The ingress replica's quota (``serve_apps.quota``, ``RecommenderArgs.quota``) answers a tenant over
its rate with 429 before any model or disk work, but each of those requests has already crossed the
proxy -> replica hop, which is most of a request's cost on this model (docs/serving.md). Under a
flood at 10x capacity that hop is what slows every other tenant. This module moves the same token
bucket in front of the hop: a pure-ASGI middleware that Ray Serve installs in every HTTP proxy.

Ray Serve reads ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` (``module.function``) when a proxy
starts and wraps its ASGI app in the Starlette middlewares the function returns. Both variables go
in the environment of every Ray node, before ``ray start`` (or ``ray.init``): :data:`PROXY_QUOTA_ENV`.

    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=serve_apps.proxy_quota.middlewares
    REC_PROXY_QUOTA='{"requests_per_s": 50, "burst": 100}'

The bucket is per proxy (one per node), as the replica's is per replica: with P proxies a tenant
gets up to P times the rate. Only ``/v1/tenants/<valid id>/...`` is counted; other paths (health,
OpenAPI) and invalid ids (the app answers those 422) pass through. The 429 is the app's: the same
``{"detail": ...}`` body and ``Retry-After`` header the contract documents.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from rec.data.schema import TENANT_ID_RE
from serve_apps.args import Quota
from serve_apps.quota import TenantQuota

__all__ = ["PROXY_QUOTA_VAR", "PROXY_QUOTA_ENV", "ProxyQuota", "middlewares", "proxy_quota_env"]

#: the quota every proxy enforces: ``serve_apps.args.Quota`` as JSON
PROXY_QUOTA_VAR = "REC_PROXY_QUOTA"
#: what Ray Serve calls in each proxy for its middlewares
PROXY_QUOTA_ENV = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serve_apps.proxy_quota.middlewares"}

_TENANT_PATH = re.compile(r"/v1/tenants/([^/]+)(?:/|$)")
Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def proxy_quota_env(quota: Quota) -> dict[str, str]:
    """The node environment that turns the proxy quota on (to pass to ``ray start``)."""
    if quota.requests_per_s is None:
        raise ValueError("a proxy quota needs requests_per_s: set quota.requests_per_s > 0")
    return {**PROXY_QUOTA_ENV, PROXY_QUOTA_VAR: quota.model_dump_json()}


class ProxyQuota:
    """Pure-ASGI middleware: one token bucket per tenant id, 429 + ``Retry-After`` beyond it."""

    def __init__(self, app: Callable[..., Awaitable[None]], requests_per_s: float, burst: int) -> None:
        self.app = app
        self.quota = TenantQuota(requests_per_s, burst)

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Send) -> None:
        tenant = _tenant_of(scope) if scope["type"] == "http" else None
        wait = self.quota.take(tenant) if tenant is not None else None
        if wait is None:
            await self.app(scope, receive, send)
            return
        detail = (f"tenant {tenant!r} is over its request quota ({self.quota.rate:g}/s, burst {self.quota.burst}): "
                  f"retry after {wait} s")
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": 429,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"retry-after", str(wait).encode())]})
        await send({"type": "http.response.body", "body": body})


def _tenant_of(scope: Scope) -> str | None:
    m = _TENANT_PATH.search(scope.get("path", ""))
    return m.group(1) if m and TENANT_ID_RE.fullmatch(m.group(1)) else None


def middlewares() -> list[Any]:
    """What Ray Serve's proxy callback returns: the quota middleware, or nothing when
    ``REC_PROXY_QUOTA`` is unset. A malformed value fails the proxy's start with the reason."""
    from starlette.middleware import Middleware

    raw = os.environ.get(PROXY_QUOTA_VAR)
    if not raw:
        return []
    try:
        quota = Quota.model_validate_json(raw)
    except ValueError as e:
        raise ValueError(f"{PROXY_QUOTA_VAR}={raw!r} is not a quota: give JSON like "
                         f'{{"requests_per_s": 50, "burst": 100}} ({e})') from None
    if quota.requests_per_s is None:
        raise ValueError(f"{PROXY_QUOTA_VAR}={raw!r}: set requests_per_s > 0, or unset the variable for no proxy quota")
    return [Middleware(ProxyQuota, requests_per_s=quota.requests_per_s, burst=quota.burst)]
