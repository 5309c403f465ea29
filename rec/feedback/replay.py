"""Replay a tenant's interactions into its event log the way the service and its clients write it.

For tests, benchmarks and demos of the feedback loop: each interaction becomes one impression
record (what the service showed, naming the user and the version) and one click (or purchase)
event posted by the client, written through :class:`rec.serving.events.EventLog` so the log is the
real thing (day files, fsync, locking). Clicks quote the answer's ``request_id``; a share of them
omit the user id, as clients that only know the request do, so readers must join them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rec.data.schema import Tenant
from rec.serving.events import EventLog
from rec.serving.store import ArtifactRoot

__all__ = ["replay_interactions"]


def replay_interactions(root: str | Path, tenant: Tenant, users: list[int], start_unix: float, step_s: float = 60.0,
                        version: str = "v1", anonymous_share: float = 0.3, seed: int = 0,
                        extra_items: tuple[str, ...] = ()) -> int:
    """Log every interaction of ``users`` (rows of ``tenant``), ``step_s`` apart from ``start_unix``.

    Args:
        version: ``adapter_version`` the impressions name.
        anonymous_share: Fraction of clicks logged without ``user_id`` (joined by ``request_id``).
        extra_items: Item ids outside the catalog, clicked once each by the first users (readers
            must drop them).

    Returns:
        The number of click/purchase events written.
    """
    rng = np.random.default_rng(seed)
    now = [start_unix]
    log = EventLog(ArtifactRoot(root).events_dir, clock=lambda: now[0])
    ids = tenant.items.ids
    written = 0
    for u in users:
        user = f"user-{tenant.users[u]}"
        seq = [str(ids[i]) for i in tenant.sequence(u)]
        if u == users[0]:
            seq = [*extra_items, *seq]
        for j, item in enumerate(seq):
            rid = f"{tenant.name}-{u}-{j}-{seed}"
            log.append_unkeyed(tenant.name, [{
                "kind": "impression", "request_id": rid, "items": [item], "positions": [1], "propensities": [1.0],
                "z": [0.0], "model_rank": [1], "policy": "greedy", "model_version": "test",
                "adapter_version": version, "user_id": user, "timestamp": now[0], "received_unix": now[0]}])
            event = {"kind": "event", "type": "purchase" if j % 5 == 4 else "click", "item_id": item,
                     "request_id": rid, "timestamp": now[0], "received_unix": now[0]}
            if rng.random() >= anonymous_share:
                event["user_id"] = user
            log.append(tenant.name, [event], idempotency_key=f"{rid}-event")
            written += 1
            now[0] += step_s
    return written
