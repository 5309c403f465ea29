"""The closed-loop benchmark's client: real users' next items replayed over HTTP, as a tenant's app would.

Per replayed interaction (user, position j) and per served tenant: ask for the top 10 given the
user's true history before j; if the true item ``j`` is among the answer, post a click quoting the
answer's ``request_id`` (with an ``Idempotency-Key``), else nothing (the service logged the
impression itself). Failed calls (connection errors, 5xx, 429) are retried with back-off: a
recommendation as a new request, an event with the same key. What the service acknowledged is
remembered (:class:`Acks`), so the log can be checked for losses and duplicates afterwards.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

__all__ = ["Acks", "Step", "StepResult", "ReplayClient", "check_log"]

RETRYABLE = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Step:
    """One replayed interaction: the user, its true history before it, and the true next item."""

    index: int  # position in the replay (time order)
    user: str
    history: tuple[str, ...]
    target: str


@dataclass(frozen=True)
class StepResult:
    index: int
    tenant: str
    rank: int | None  # 1-based position of the true item in the answer, None = not shown
    retries: int


@dataclass
class Acks:
    """What the service acknowledged: answered request ids and 201-ed event keys, per tenant."""

    requests: dict[str, list[str]] = field(default_factory=dict)
    events: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, tenant: str, key: str) -> None:
        with self.lock:
            getattr(self, kind).setdefault(tenant, []).append(key)


class ReplayClient:
    """Thread-safe HTTP client of one app (``base_url``), one ``requests.Session`` per thread."""

    def __init__(self, base_url: str, acks: Acks, k: int = 10, max_history: int = 50, attempts: int = 30,
                 backoff_s: float = 0.1) -> None:
        self.base, self.acks, self.k, self.max_history = base_url.rstrip("/"), acks, k, max_history
        self.attempts, self.backoff_s = attempts, backoff_s
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "s"):
            self._local.s = requests.Session()
        return self._local.s

    def _post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[dict[str, Any], int]:
        """POST until a non-retryable answer; returns (json, retries). Raises on a 4xx or on giving up."""
        last = ""
        for attempt in range(self.attempts):
            try:
                r = self._session().post(self.base + path, json=body, headers=headers, timeout=30)
                if r.status_code < 300:
                    return r.json(), attempt
                if r.status_code not in RETRYABLE:
                    raise RuntimeError(f"POST {path}: HTTP {r.status_code} {r.text[:300]}")
                last = f"HTTP {r.status_code}"
            except requests.RequestException as e:
                last = type(e).__name__
            time.sleep(min(2.0, self.backoff_s * 2 ** attempt))
        raise RuntimeError(f"POST {path}: gave up after {self.attempts} attempts ({last})")

    def step(self, tenant: str, s: Step) -> StepResult:
        body = {"history": list(s.history[-self.max_history:]), "k": self.k, "user_id": s.user}
        ans, retries = self._post(f"/v1/tenants/{tenant}/recommendations", body)
        self.acks.add("requests", tenant, ans["request_id"])
        shown = [it["item_id"] for it in ans["items"]]
        if s.target not in shown:
            return StepResult(s.index, tenant, None, retries)
        key = f"{tenant}-{s.index}"
        event = {"type": "click", "item_id": s.target, "user_id": s.user, "request_id": ans["request_id"]}
        _, r2 = self._post(f"/v1/tenants/{tenant}/events", {"events": [event]}, {"Idempotency-Key": key})
        self.acks.add("events", tenant, key)
        return StepResult(s.index, tenant, shown.index(s.target) + 1, retries + r2)

    def recommend(self, tenant: str, history: list[str]) -> list[str]:
        ans, _ = self._post(f"/v1/tenants/{tenant}/recommendations", {"history": history, "k": self.k})
        return [it["item_id"] for it in ans["items"]]

    def click(self, tenant: str, item: str, key: str) -> None:
        self._post(f"/v1/tenants/{tenant}/events", {"events": [{"type": "click", "item_id": item}]}, {"Idempotency-Key": key})


def window_metrics(results: list[StepResult]) -> dict[str, float]:
    """HR@k and NDCG@k (one relevant item) over a window's steps."""
    n = len(results)
    hits = [r.rank for r in results if r.rank is not None]
    return {"hr@10": len(hits) / n if n else 0.0, "ndcg@10": sum(1.0 / math.log2(r + 1) for r in hits) / n if n else 0.0}


def check_log(read: Callable[[str], list[dict[str, Any]]], acks: Acks) -> dict[str, int]:
    """Every acknowledged answer has exactly one impression record and every acknowledged event
    exactly one logged record; returns the counts (``lost`` and ``duplicated`` must be 0)."""
    out = {"acked_requests": 0, "acked_events": 0, "lost": 0, "duplicated": 0}
    for tenant in sorted(set(acks.requests) | set(acks.events)):
        impressions: dict[str, int] = {}
        keyed: dict[str, int] = {}
        for rec in read(tenant):
            if rec.get("kind") == "impression":
                impressions[rec["request_id"]] = impressions.get(rec["request_id"], 0) + 1
            elif rec.get("idempotency_key"):
                keyed[rec["idempotency_key"]] = keyed.get(rec["idempotency_key"], 0) + 1
        for seen, acked, name in ((impressions, acks.requests.get(tenant, []), "acked_requests"),
                                  (keyed, acks.events.get(tenant, []), "acked_events")):
            out[name] += len(acked)
            out["lost"] += sum(1 for a in acked if seen.get(a, 0) == 0)
            out["duplicated"] += sum(1 for a in set(acked) if seen.get(a, 0) > 1)
    return out
