"""HTTP load generators for the serving benchmark, on 127.0.0.1: closed loop, open (Poisson) loop and
the highest open-loop rate that meets a p99 SLO (bisection).

All bounded in time and in requests. Every request asks a uniformly random tenant for the top 10
after a ``HIST``-item history; a response counts only if it is HTTP 200 with 10 items.

The generator shares the 2 cores with the server, so it is kept cheap: one asyncio event loop with
one aiohttp connection pool (no thread per client), request bodies serialized before the clock
starts, and its own CPU time measured (``client_cpu_s``, ``client_cpu_frac`` = CPU seconds per
wall second) so it can be reported next to the throughput it drove.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import numpy as np

HIST = 20  # history length of every request
K = 10


def _bodies(tenants: dict[str, list[str]], n: int, seed: int) -> list[tuple[str, bytes]]:
    """``n`` (tenant, JSON body) pairs, drawn before the clock starts."""
    rng = np.random.default_rng(seed)
    names = tenants["__names__"]
    out = []
    for t in rng.integers(len(names), size=n):
        name = names[t]
        ids = tenants[name]
        hist = [ids[i] for i in rng.integers(0, len(ids), HIST)]
        out.append((name, json.dumps({"history": hist, "k": K}).encode()))
    return out


async def _one(session, url: str, tenant: str, body: bytes, header: bool, codes: Counter | None = None) -> bool:  # noqa: ANN001
    """One request; True for a 200 with K items. ``codes`` (optional) counts HTTP statuses (-1: no answer)."""
    import aiohttp

    headers = {"content-type": "application/json"}
    if header:
        headers["serve_multiplexed_model_id"] = tenant
    status = -1
    try:
        async with session.post(f"{url}/v1/tenants/{tenant}/recommendations", data=body, headers=headers) as r:
            status = r.status
            data = await r.read()
            return r.status == 200 and len(json.loads(data)["items"]) == K
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError):
        return False
    finally:
        if codes is not None:
            codes[status] += 1


def _session(limit: int):  # noqa: ANN202
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=False),
                                 timeout=aiohttp.ClientTimeout(total=30))


def _summary(lat: list[float], errors: int, wall: float, cpu: float) -> dict[str, Any]:
    ms = np.array(lat) * 1000 if lat else np.array([np.nan])
    return {"rps": len(lat) / wall, "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "errors": errors, "requests": len(lat) + errors,
            "wall_s": round(wall, 2), "client_cpu_s": round(cpu, 2), "client_cpu_frac": round(cpu / wall, 3)}


def drive_closed(url: str, tenants: dict, clients: int, duration: float, header: bool, max_requests: int,
                 seed: int = 0, latencies: list[float] | None = None) -> dict[str, Any]:
    """``clients`` closed-loop clients for ``duration`` s or ``max_requests`` requests in all; the
    successful requests' latencies (seconds) are appended to ``latencies`` when given (to pool runs)."""
    bodies = _bodies(tenants, max_requests, seed)

    async def run() -> tuple[list[float], int, float]:
        lat: list[float] = []
        errors = 0
        nxt = 0
        async with _session(clients) as s:
            start = time.perf_counter()
            stop = start + duration

            async def client() -> None:
                nonlocal nxt, errors
                while nxt < len(bodies) and time.perf_counter() < stop:
                    tenant, body = bodies[nxt]
                    nxt += 1
                    t0 = time.perf_counter()
                    if await _one(s, url, tenant, body, header):
                        lat.append(time.perf_counter() - t0)
                    else:
                        errors += 1

            await asyncio.gather(*(client() for _ in range(clients)))
            return lat, errors, time.perf_counter() - start

    cpu0 = time.process_time()
    lat, errors, wall = asyncio.run(run())
    if latencies is not None:
        latencies.extend(lat)
    return _summary(lat, errors, wall, time.process_time() - cpu0)


def _schedule(schedule: list[tuple[float, float]], seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    times, t = [], 0.0
    for rate, secs in schedule:
        end = t + secs
        while True:
            t += rng.exponential(1.0 / rate)
            if t >= end:
                t = end
                break
            times.append(t)
    return times


async def _open_loop(session, url: str, tenants: dict, schedule: list[tuple[float, float]], header: bool,  # noqa: ANN001
                     seed: int, codes: Counter | None = None) -> list[tuple[float, float, bool]]:
    times = _schedule(schedule, seed)
    bodies = _bodies(tenants, max(1, len(times)), seed + 1)
    out: list[tuple[float, float, bool]] = []
    start = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        ok = await _one(session, url, *bodies[i], header, codes)
        out.append((times[i], time.perf_counter() - start - times[i], ok))

    tasks = []
    for i, ts in enumerate(times):
        delay = start + ts - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i)))
    await asyncio.gather(*tasks)
    return sorted(out)


def drive_open(url: str, tenants: dict, schedule: list[tuple[float, float]], header: bool, seed: int = 0,
               max_inflight: int = 512, codes: Counter | None = None) -> list[tuple[float, float, bool]]:
    """Open loop: Poisson arrivals, ``schedule`` = [(rate rps, seconds), ...]. Returns one
    ``(scheduled time from start, latency from scheduled time, ok)`` per request: latency counts
    from the scheduled send time, so a late client or a full pool is not hidden. At most
    ``max_inflight`` connections are open (more requests wait, and their wait counts). ``codes``
    (optional) counts the HTTP statuses."""

    async def run() -> list[tuple[float, float, bool]]:
        async with _session(max_inflight) as s:
            return await _open_loop(s, url, tenants, schedule, header, seed, codes)

    return asyncio.run(run())


def open_summary(recs: list[tuple[float, float, bool]], duration: float, cpu_s: float = 0.0) -> dict[str, Any]:
    lat = [r[1] for r in recs if r[2]]
    wall = max([duration] + [r[0] + r[1] for r in recs])
    return _summary(lat, sum(1 for r in recs if not r[2]), wall, cpu_s)


def max_rate_at_slo(url: str, tenants: dict, header: bool, hi: float, slo_p99_ms: float = 50.0,
                    duration: float = 4.0, steps: int = 6, seed: int = 0, max_inflight: int = 512) -> dict[str, Any]:
    """Highest Poisson rate with p99 <= ``slo_p99_ms`` and 0 errors (latency from the scheduled send
    time, so an overloaded server fails by its growing queue), by bisection over [0, ``hi``]
    (``steps`` probes of ``duration`` s each). One connection pool serves every probe and is
    warmed first (1 s closed loop), so no probe pays for opening connections.

    Returns ``{"rate", "probes": [...], "at_rate": summary of the best passing probe or None}``.
    """

    async def run() -> dict[str, Any]:
        lo, best, probes = 0.0, None, []
        rate, top = hi / 2, hi
        async with _session(max_inflight) as s:
            warm = _bodies(tenants, 64, seed + 99)
            stop = time.perf_counter() + 1.0

            async def warm_client(j: int) -> None:
                while time.perf_counter() < stop:
                    await _one(s, url, *warm[j % len(warm)], header)

            await asyncio.gather(*(warm_client(j) for j in range(32)))
            for i in range(steps):
                await asyncio.sleep(0.5)  # the queue of the last probe drains
                cpu0 = time.process_time()
                recs = await _open_loop(s, url, tenants, [(rate, duration)], header, seed + i)
                res = {**open_summary(recs, duration, time.process_time() - cpu0), "offered_rps": rate}
                ok = res["errors"] == 0 and res["p99_ms"] <= slo_p99_ms
                probes.append({"rate": round(rate, 1), "p50_ms": round(res["p50_ms"], 1), "p99_ms": round(res["p99_ms"], 1),
                               "rps": round(res["rps"], 1), "errors": res["errors"], "ok": ok})
                if ok:
                    lo, best = rate, res
                else:
                    top = rate
                rate = (lo + top) / 2
        return {"rate": lo, "probes": probes, "at_rate": best}

    return asyncio.run(run())
