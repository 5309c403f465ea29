"""HTTP load generators for the serving benchmark: a closed loop and an open (Poisson) loop on 127.0.0.1.

Both are bounded in time and in requests. Every request asks a uniformly random tenant for the top
10 after a ``HIST``-item history; a response counts only if it is HTTP 200 with 10 items.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

HIST = 20  # history length of every request


def _request(s, url: str, tenants: dict[str, list[str]], rng: np.random.Generator, header: bool) -> bool:  # noqa: ANN001
    import requests

    names = tenants["__names__"]
    t = names[rng.integers(len(names))]
    hist = [tenants[t][i] for i in rng.integers(0, len(tenants[t]), HIST)]
    headers = {"serve_multiplexed_model_id": t} if header else {}
    try:
        r = s.post(f"{url}/v1/tenants/{t}/recommendations", json={"history": hist, "k": 10}, headers=headers, timeout=30)
        return r.status_code == 200 and len(r.json()["items"]) == 10
    except (requests.RequestException, ValueError, KeyError):
        return False


def _summary(lat: list[float], errors: int, wall: float) -> dict[str, Any]:
    ms = np.array(lat) * 1000 if lat else np.array([np.nan])
    return {"rps": len(lat) / wall, "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "errors": errors, "requests": len(lat) + errors}


def drive_closed(url: str, tenants: dict, clients: int, duration: float, header: bool, max_requests: int,
                 seed: int = 0) -> dict[str, Any]:
    """``clients`` closed-loop clients for ``duration`` s or ``max_requests`` requests in all."""
    import requests

    lat: list[float] = []
    errors = [0]
    stop = time.perf_counter() + duration
    lock = threading.Lock()

    def client(c: int) -> None:
        rng = np.random.default_rng([seed, c])
        with requests.Session() as s:
            while time.perf_counter() < stop and len(lat) + errors[0] < max_requests:
                t0 = time.perf_counter()
                ok = _request(s, url, tenants, rng, header)
                with lock:
                    (lat.append(time.perf_counter() - t0) if ok else errors.__setitem__(0, errors[0] + 1))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return _summary(lat, errors[0], time.perf_counter() - t0)


def drive_open(url: str, tenants: dict, schedule: list[tuple[float, float]], header: bool, seed: int = 0,
               workers: int = 96) -> list[tuple[float, float, bool]]:
    """Open loop: Poisson arrivals, ``schedule`` = [(rate rps, seconds), ...]. Returns one
    ``(scheduled time from start, latency from scheduled time, ok)`` per request."""
    import requests

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
    local = threading.local()
    out: list[tuple[float, float, bool]] = []
    lock = threading.Lock()
    start = time.perf_counter() + 0.2

    def one(i: int) -> None:
        if not hasattr(local, "s"):
            local.s = requests.Session()
        ok = _request(local.s, url, tenants, np.random.default_rng([seed, i]), header)
        done = time.perf_counter() - start
        with lock:
            out.append((times[i], done - times[i], ok))

    with ThreadPoolExecutor(workers) as pool:
        for i, ts in enumerate(times):
            delay = start + ts - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i)
    return sorted(out)


def open_summary(recs: list[tuple[float, float, bool]], duration: float) -> dict[str, Any]:
    lat = [r[1] for r in recs if r[2]]
    wall = max([duration] + [r[0] + r[1] for r in recs])
    return _summary(lat, sum(1 for r in recs if not r[2]), wall)
