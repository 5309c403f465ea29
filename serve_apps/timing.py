"""Per-replica timing of the request path, for the serving benchmark's overhead decomposition.

Off by default: a replica records only when its ``RecommenderArgs.record_timings`` is set; then
the ingress and the Ranker of that replica share one :class:`Timings` (no module-level state), and
``stats()`` returns it. Each stage records its duration (``time.perf_counter`` pairs, ~0.1 us each)
into a bounded ring; ``summary()`` gives count / p50 / p90 per stage in milliseconds. Stages (one
replica process may record several, depending on the layout):

- ``asgi``: the replica's ASGI app, from the request reaching it to the last body byte sent
  (FastAPI parsing + validation, the handler, serialization);
- ``handler``: the route handler body (auth, bounds, the Ranker call);
- ``call``: the handler's call of the Ranker (the local call, or the Serve hop to another replica);
- ``ranker``: Ranker-side, from ``recommend`` entry to its answer;
- ``queue``: a request's wait in the ``@serve.batch`` queue (entry to batch start);
- ``inline``: batch start to ranking, for a batch ranked on the event loop (every tenant held);
- ``thread``: a batch's hop onto the worker thread (a tenant had to be loaded); ``resolve`` / ``feed`` / ``ort`` / ``topk``:
  the parts of ``rank_batch`` (per batch).
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["Timings"]


class Timings:
    """Bounded per-stage rings of durations (seconds); one per replica that records timings."""

    def __init__(self, maxlen: int = 4096) -> None:
        self.maxlen = maxlen
        self._d: dict[str, deque[float]] = {}

    def add(self, stage: str, seconds: float) -> None:
        q = self._d.get(stage)
        if q is None:
            q = self._d[stage] = deque(maxlen=self.maxlen)
        q.append(seconds)

    def clear(self) -> None:
        self._d.clear()

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for stage, q in list(self._d.items()):
            a = np.asarray(q, dtype=np.float64) * 1000
            if len(a):
                out[stage] = {"n": int(len(a)), "p50_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
                              "mean_ms": float(a.mean())}
        return out
