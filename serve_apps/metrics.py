"""Per-tenant live metrics of the recommender, exported through Ray's metrics (Prometheus format).

Ray exports them from every node's metrics agent with a ``ray_`` prefix (and adds the Serve
application, deployment and replica tags); ``cluster/grafana/tenant-dashboard.json`` charts them
next to Ray's own dashboards, and the re-adaptation guardrail reads the same click-through.

==================================== =========================== ==============================
metric (as scraped)                  tags                        what
==================================== =========================== ==============================
ray_fewshot_requests_total           tenant, route, status       answered HTTP requests
ray_fewshot_request_latency_ms       tenant, route               handler latency (histogram)
ray_fewshot_impressions_total        tenant, policy              answers shown (one slate each)
ray_fewshot_events_total             tenant, type                posted feedback events
ray_fewshot_serving_version          tenant                      adapter version answering
ray_fewshot_policy                   tenant, policy              1 for the policy in use
==================================== =========================== ==============================

Click-through = ``rate(events_total{type="click"}) / rate(impressions_total)`` per tenant.
"""

from __future__ import annotations

import re
import time

from ray.serve import metrics

GAUGE_REFRESH_S = 5.0  # seconds between re-writes of a served tenant's version/policy gauges

__all__ = ["LATENCY_BOUNDARIES_MS", "METRIC_NAMES", "RequestMetrics", "TenantMetrics"]

LATENCY_BOUNDARIES_MS = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0]
METRIC_NAMES = ("fewshot_requests_total", "fewshot_request_latency_ms", "fewshot_impressions_total",
                "fewshot_events_total", "fewshot_serving_version", "fewshot_policy")


class TenantMetrics:
    """The recommender's metrics, created once per replica (Ray registers them on first use)."""

    def __init__(self) -> None:
        self.requests = metrics.Counter("fewshot_requests_total", "answered HTTP requests",
                                        tag_keys=("tenant", "route", "status"))
        self.latency = metrics.Histogram("fewshot_request_latency_ms", "handler latency in ms",
                                         boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("tenant", "route"))
        self.impressions = metrics.Counter("fewshot_impressions_total", "answers shown (one slate each)",
                                           tag_keys=("tenant", "policy"))
        self.events = metrics.Counter("fewshot_events_total", "posted feedback events", tag_keys=("tenant", "type"))
        self.version = metrics.Gauge("fewshot_serving_version", "adapter version answering", tag_keys=("tenant",))
        self.policy = metrics.Gauge("fewshot_policy", "1 for the exploration policy in use", tag_keys=("tenant", "policy"))
        self._policy_of: dict[str, str] = {}
        self._version_of: dict[str, int] = {}
        self._gauges_set: dict[str, float] = {}  # tenant -> monotonic time its gauges were last written

    def request(self, tenant: str, route: str, status: int, latency_ms: float) -> None:
        tags = {"tenant": tenant, "route": route}
        self.requests.inc(1, tags={**tags, "status": str(status)})
        self.latency.observe(latency_ms, tags=tags)

    def answered(self, tenant: str, policy: str, adapter_version: str) -> None:
        """One slate shown; keeps the version and policy gauges current: written on a change and
        re-written at least every ``GAUGE_REFRESH_S`` while the tenant is served (a gauge written
        once was missing from the scrape minutes later in a long test session)."""
        self.impressions.inc(1, tags={"tenant": tenant, "policy": policy})
        version = int(adapter_version.lstrip("v") or 0)
        now = time.monotonic()
        stale = now - self._gauges_set.get(tenant, -GAUGE_REFRESH_S) >= GAUGE_REFRESH_S
        if stale or self._version_of.get(tenant) != version:
            self.version.set(version, tags={"tenant": tenant})
            self._version_of[tenant] = version
        old = self._policy_of.get(tenant)
        if stale or old != policy:
            if old is not None and old != policy:
                self.policy.set(0, tags={"tenant": tenant, "policy": old})
            self.policy.set(1, tags={"tenant": tenant, "policy": policy})
            self._policy_of[tenant] = policy
        if stale:
            self._gauges_set[tenant] = now

    def posted(self, tenant: str, types: list[str]) -> None:
        counts: dict[str, int] = {}
        for t in types:
            counts[t] = counts.get(t, 0) + 1
        for t, n in counts.items():
            self.events.inc(n, tags={"tenant": tenant, "type": t})


_ROUTE = re.compile(r"^/v1/tenants/([^/]+)(?:/(recommendations|events))?/?$")
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class RequestMetrics:
    """ASGI middleware: status and latency of every tenant request, tagged by tenant and route.

    Tenant tags stay bounded: an id that is not a valid tenant id is tagged ``_invalid`` and one
    the service does not know (404) ``_unknown``, so fuzzing or typos never mint new series.
    ``metrics_of()`` returns the replica's :class:`TenantMetrics` (None: not recording).
    """

    def __init__(self, app, metrics_of) -> None:  # noqa: ANN001
        self.app = app
        self.metrics_of = metrics_of

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        m = _ROUTE.match(scope.get("path", "")) if scope["type"] == "http" else None
        recorder = self.metrics_of() if m is not None else None
        if recorder is None:
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_status(message) -> None:  # noqa: ANN001
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            tenant = m.group(1) if _TENANT.match(m.group(1)) else "_invalid"
            tenant = "_unknown" if status == 404 else tenant
            recorder.request(tenant, m.group(2) or "status", status, (time.perf_counter() - t0) * 1e3)
