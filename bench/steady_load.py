"""A steady closed-loop HTTP load that runs until stopped, recording every answer with its time.

Fault benchmarks (bench/chaos.py, bench/gcs_kill.py) keep it running while they inject a fault,
then count the answers inside the fault's window. Each thread loops over the tenants, asking one
recommendation at a time (``history: []``, ``k: 5``: zero-shot, the cheapest request).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["SteadyLoad"]


class SteadyLoad:
    """``with SteadyLoad(url, tenants, threads) as load: ...``; ``codes``: HTTP status -> count (-1: no answer).

    ``answers``: (end time as ``time.time()``, seconds, status) of every request, in completion order.
    ``read``: optional ``response -> value`` applied to every 200; ``read_values`` then holds
    (send time, end time, tenant, value) of each, so a fault row can check what was served when.
    """

    def __init__(self, url: str, tenants: list[str], threads: int, timeout_s: float = 60.0,
                 read: Callable[[Any], Any] | None = None) -> None:
        self.url, self.tenants, self.timeout_s, self.stop = url, tenants, timeout_s, threading.Event()
        self.codes: Counter = Counter()
        self.answers: list[tuple[float, float, int]] = []
        self.read, self.read_values = read, []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        import requests

        with requests.Session() as s:
            n = 0
            while not self.stop.is_set():
                n += 1
                tenant = self.tenants[(i + n) % len(self.tenants)]
                sent, t0 = time.time(), time.perf_counter()
                try:
                    r = s.post(f"{self.url}/v1/tenants/{tenant}/recommendations", json={"history": [], "k": 5},
                               timeout=self.timeout_s)
                    code = r.status_code
                    if code == 200 and self.read is not None:
                        self.read_values.append((sent, time.time(), tenant, self.read(r)))
                except requests.RequestException:
                    code = -1
                self.codes[code] += 1
                self.answers.append((time.time(), time.perf_counter() - t0, code))

    @property
    def lat(self) -> list[tuple[float, float]]:
        """(end time, seconds) of every request."""
        return [(end, s) for end, s, _ in self.answers]

    def between(self, t0: float, t1: float) -> list[tuple[float, float, int]]:
        """The answers that completed in [t0, t1]."""
        return [a for a in self.answers if t0 <= a[0] <= t1]

    def __enter__(self) -> "SteadyLoad":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()
