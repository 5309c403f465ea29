"""Per-tenant request quotas: one token bucket per tenant, in each ingress replica.

A tenant may send ``burst`` requests at once and ``requests_per_s`` sustained; beyond that it is
answered 429 with ``Retry-After`` (the seconds until a token is back) before any auth, model or
disk work, so a flooding tenant costs the replica little and other tenants keep their latency.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["TenantQuota"]


class TenantQuota:
    """Token buckets by tenant id, bounded to ``max_tenants`` (least recently seen dropped: a
    dropped bucket comes back full, which only forgives a tenant that has been quiet).

    Args:
        requests_per_s: Refill rate of each bucket.
        burst: Bucket size.
        clock: Monotonic clock (tests pass their own).
        max_tenants: Buckets kept.
    """

    def __init__(self, requests_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_tenants: int = 100_000) -> None:
        if requests_per_s <= 0 or burst < 1:
            raise ValueError(f"quota needs requests_per_s > 0 and burst >= 1, got {requests_per_s}, {burst}")
        self.rate, self.burst, self._clock, self.max_tenants = float(requests_per_s), int(burst), clock, max_tenants
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tenant -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, tenant: str) -> int | None:
        """Spend one token of ``tenant``: None when allowed, else whole seconds to wait (>= 1)."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(tenant, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[tenant] = (tokens, now)
            if len(self._buckets) > self.max_tenants:
                self._buckets.popitem(last=False)
        return None if allowed else max(1, math.ceil((1.0 - tokens) / self.rate))
