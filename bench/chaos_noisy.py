"""Chaos row ``noisy-neighbour``: a quiet tenant's p99 alone and while another tenant floods at 10x capacity.

Measured for both places a per-tenant quota can stand, one after the other in one run, each on its
own private head (the proxy's quota is set in the node environment, before Ray starts):

- ``replica``: the ingress replica's token bucket (``RecommenderArgs.quota``): the flood's 429s are
  answered by the replica, after the proxy -> replica hop;
- ``proxy``: the same bucket in front of the hop, in Serve's HTTP proxy (``serve_apps.proxy_quota``),
  with the replica's bucket kept behind it.

Capacity = closed-loop throughput (16 clients, 6 s) of the replica session before its quota is set;
the proxy session's quota is derived from the same capacity. In each session the phases solo/flood
alternate ``repeats`` times; ``p99_ratio`` = median of (quiet p99 under the flood / quiet p99 alone).
The row's shared columns (requests, client_errors, 5xx, p99) are the proxy placement's (the one the
docs recommend); the replica placement's ratio and errors are kept beside them
(``p99_ratio_replica_quota``, ``client_errors_replica_quota``). A pair whose phase got no answer at
all (every request timed out) has ratio None and counts as the worst pair in the median.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench._results import log
from bench.chaos_serve import config_session, live_tenants

__all__ = ["NOISY_PROTOCOL", "noisy_neighbour_row", "noisy_row"]

NOISY_PROTOCOL = (
    "capacity = closed-loop rps (16 clients, 6 s, both tenants) before any quota; replica placement: quota 15 % of "
    "capacity per tenant and ingress replica (burst 20); proxy placement: 30 % of capacity per tenant in the Serve proxy "
    "(burst 40; one proxy on the one node = the 2 replicas' 15 % each) with the replica quota kept behind it; the quiet "
    "tenant: open loop at 20 % of capacity, 10 s per phase, latency from the scheduled send; the flooder: another "
    "process (niced: a real one runs elsewhere), open loop at 10x capacity ignoring Retry-After; phases solo/flood "
    "alternate 3 times per placement, p99_ratio = median of the flood/solo ratios (proxy placement; "
    "p99_ratio_replica_quota beside it)")


def _flood(url: str, tenants: dict[str, Any], rate: float, seconds: float, ready: Any, out: Any) -> None:
    """The flooding tenant, in its own process (spawned): an open loop at ``rate`` that ignores
    ``Retry-After``. Niced: a real flooder runs on its own machines, not on the server's 2 cores."""
    from bench.load_gen import drive_open

    os.nice(10)
    codes: Counter = Counter()
    ready.set()
    cpu0, t0 = time.process_time(), time.time()
    drive_open(url, tenants, [(rate, seconds)], header=False, seed=7, max_inflight=256, codes=codes)
    out.put({"offered_rps": round(rate, 1), "answered": sum(codes.values()), "wall_s": round(time.time() - t0, 1),
             "client_cpu_s": round(time.process_time() - cpu0, 1), "codes": {str(c): n for c, n in sorted(codes.items())}})


def _quiet_phase(url: str, quiet: dict[str, Any], rate: float, seconds: float,
                 flood: tuple[dict[str, Any], float] | None) -> dict[str, Any]:
    """The quiet tenant's open loop at ``rate`` for ``seconds``, alone or while ``flood`` = (tenants,
    rate) floods from another process; p99 (from the scheduled send time), errors and statuses."""
    import multiprocessing as mp

    from bench.load_gen import drive_open, open_summary

    flooder, got = None, None
    if flood is not None:
        ctx = mp.get_context("spawn")
        ready, out = ctx.Event(), ctx.Queue()
        flooder = ctx.Process(target=_flood, args=(url, flood[0], flood[1], seconds + 2, ready, out), daemon=True)
        flooder.start()
        if not ready.wait(60):
            raise RuntimeError("the flooding process did not start in 60 s")
        time.sleep(1.0)  # the flood is on before the quiet tenant is measured
    codes: Counter = Counter()
    recs = drive_open(url, quiet, [(rate, seconds)], header=False, seed=int(time.time()), codes=codes)
    if flooder is not None:
        with contextlib.suppress(Exception):
            got = out.get(timeout=60)
        flooder.join(5)
        if flooder.is_alive():
            flooder.kill()
    summary = open_summary(recs, seconds)
    p99 = summary["p99_ms"]  # nan when no request got an answer
    return {"p99_ms": round(p99, 1) if np.isfinite(p99) else None, "requests": sum(codes.values()),
            "errors": sum(n for c, n in codes.items() if c != 200), "5xx": sum(n for c, n in codes.items() if c >= 500),
            "codes": {str(c): n for c, n in sorted(codes.items())}, "flood": got}


def _phases(session: Any, placement: str, tenants: list[str], ids: dict[str, Any], capacity: float,
            repeats: int, seconds: float) -> list[dict[str, Any]]:
    """``repeats`` solo/flood pairs of the quiet tenant (``tenants[0]``) against the flooder (``tenants[1]``)."""
    quiet_t, flood_t = tenants[0], tenants[1]
    quiet, flooder = {"__names__": [quiet_t], quiet_t: ids[quiet_t]}, {"__names__": [flood_t], flood_t: ids[flood_t]}
    phases = []
    for k in range(repeats):
        for name, flood in (("solo", None), ("flood", (flooder, 10 * capacity))):
            phases.append({"placement": placement, "phase": name,
                           **_quiet_phase(session.url, quiet, 0.2 * capacity, seconds, flood)})
            log(f"noisy neighbour ({placement} quota) {k + 1}/{repeats} {name}: {phases[-1]}")
    return phases


def _ratios(phases: list[dict[str, Any]]) -> list[float | None]:
    """flood p99 / solo p99 per pair; None where a phase got no answer at all (worse than any ratio)."""
    solo, under = [p for p in phases if p["phase"] == "solo"], [p for p in phases if p["phase"] == "flood"]
    return [round(f["p99_ms"] / a["p99_ms"], 2) if f["p99_ms"] is not None and a["p99_ms"] is not None else None
            for a, f in zip(solo, under, strict=True)]


def _median(ratios: list[float | None]) -> float | None:
    """Median with a pair that got no answer counted as the worst; None when that pair is the median."""
    m = float(np.median([np.inf if r is None else r for r in ratios]))
    return round(m, 2) if np.isfinite(m) else None


def noisy_neighbour_row(root: Path, repeats: int, seconds: float) -> dict[str, Any]:
    """The row (module doc): the replica placement first (it measures the capacity), then the proxy one."""
    from bench.load_gen import drive_closed
    from rec.serving.store import ArtifactRoot
    from serve_apps.args import Quota
    from serve_apps.proxy_quota import proxy_quota_env

    tenants = live_tenants(root)
    ids = {t: json.loads((root / "tenants" / t / f"v{ArtifactRoot(root).current_version(t)}" / "item_ids.json").read_text())
           for t in tenants}
    both = {"__names__": tenants, **ids}
    with config_session(root, replicas=2) as s:
        drive_closed(s.url, both, clients=8, duration=2, header=False, max_requests=10**6)  # warm
        capacity = drive_closed(s.url, both, clients=16, duration=6, header=False, max_requests=10**6)["rps"]
        quota = {"requests_per_s": round(0.15 * capacity, 1), "burst": 20}
        s.deploy(2, {"quota": quota})
        s.wait_ready()
        phases = _phases(s, "replica", tenants, ids, capacity, repeats, seconds)
    proxy_quota = Quota(requests_per_s=round(0.3 * capacity, 1), burst=40)
    with config_session(root, replicas=2, args={"quota": quota}, env=proxy_quota_env(proxy_quota)) as s:
        drive_closed(s.url, {"__names__": [tenants[0]], tenants[0]: ids[tenants[0]]}, clients=4, duration=2, header=False,
                     max_requests=10**6)  # warm, under the proxy quota of the quiet tenant
        phases += _phases(s, "proxy", tenants, ids, capacity, repeats, seconds)
    return noisy_row(phases, capacity, quota, proxy_quota.model_dump())


def noisy_row(phases: list[dict[str, Any]], capacity: float, quota: dict[str, Any], proxy_quota: dict[str, Any]) -> dict[str, Any]:
    """The row from the measured phases: the shared columns are the proxy placement's (the one the
    docs recommend); the replica placement's ratio and errors stand beside them (``*_replica_quota``)."""
    at = {p: [x for x in phases if x["placement"] == p] for p in ("replica", "proxy")}
    by = {p: _ratios(at[p]) for p in at}
    under = [p for p in at["proxy"] if p["phase"] == "flood"]
    return {"fault": "noisy-neighbour", "injections": len(under), "requests": sum(p["requests"] for p in at["proxy"]),
            "client_errors": sum(p["errors"] for p in at["proxy"]), "5xx": sum(p["5xx"] for p in at["proxy"]),
            "lost_events": None, "duplicated_events": None, "recovery_s": None,
            "p99_ms_during": max((p["p99_ms"] for p in under if p["p99_ms"] is not None), default=None), "p99_ratio": _median(by["proxy"]), "p99_ratios": by["proxy"],
            "p99_ratio_replica_quota": _median(by["replica"]), "p99_ratios_replica_quota": by["replica"],
            "client_errors_replica_quota": sum(p["errors"] for p in at["replica"]),
            "requests_replica_quota": sum(p["requests"] for p in at["replica"]), "capacity_rps": round(capacity, 1),
            "quota": quota, "proxy_quota": proxy_quota, "quiet_rps": round(0.2 * capacity, 1),
            "flood_offered_rps": round(10 * capacity, 1), "phases": phases}
