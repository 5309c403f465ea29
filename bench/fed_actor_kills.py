"""Kill a share of Flower's client actors in every federated round (the ``fedavg-drop`` row of bench/federated.py).

Flower's Ray backend runs the simulated clients on a pool of ``ClientAppActor`` processes (one per
``fed.client_cpus`` of the cluster's CPUs). :class:`ActorKiller` is handed to
``rec.federated.federated_adapt`` as its ``on_round`` callback: when round ``r`` has been aggregated
(and evaluated), it arms a timer that, ``delay_s`` into round ``r + 1``, SIGKILLs
``max(1, round(fraction * pool))`` of the pool's live actor processes, a seeded choice per round.
The kill is a real process death mid-round, as a crashed host would cause: the clients routed to a
dead actor fail, Ray restarts it (``max_restarts=-1``), and the round must aggregate the rest.

Only actor processes under this driver (the Ray it started) are ever killed.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.chaos_driver import head_processes, sigkill

__all__ = ["ACTOR_TITLE", "ActorKiller", "Kill"]

ACTOR_TITLE = "ray::ClientAppActor"  # Ray's process title for Flower's client actors (".run" while busy)


@dataclass(frozen=True)
class Kill:
    round: int
    pid: int
    at: float  # time.time() of the SIGKILL
    pool: int  # live client actors seen when choosing


@dataclass
class ActorKiller:
    """SIGKILL ``fraction`` of the live client actors ``delay_s`` into every round from round 1 (armed when
    the initial evaluation, round 0, reports) through ``last_round``."""

    fraction: float
    last_round: int
    seed: int = 0
    delay_s: float = 0.25
    root_pid: int = field(default_factory=os.getpid)
    kills: list[Kill] = field(default_factory=list)
    _timers: list[threading.Timer] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"fraction={self.fraction}: the share of client actors to kill must be in (0, 1)")

    def on_round(self, server_round: int, metrics: Any, log: Any) -> None:  # noqa: ARG002 - federated_adapt's RoundCallback
        """Round ``server_round`` is done: arm the kill for the next one."""
        if server_round >= self.last_round:
            return
        timer = threading.Timer(self.delay_s, self.kill_now, args=(server_round + 1,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def choose(self, pids: list[int], server_round: int) -> list[int]:
        """``max(1, round(fraction * len(pids)))`` of ``pids``, the same for the same (seed, round, pids)."""
        if not pids:
            return []
        n = max(1, int(round(self.fraction * len(pids))))
        order = np.random.default_rng([self.seed, server_round]).permutation(len(pids))
        return [sorted(pids)[i] for i in order[:n]]

    def kill_now(self, server_round: int) -> list[Kill]:
        """SIGKILL :meth:`choose`'s share of the live client actors under ``root_pid``."""
        pids = [p.pid for p in head_processes(self.root_pid, ACTOR_TITLE)]
        done = []
        for pid in self.choose(pids, server_round):
            try:
                done.append(Kill(server_round, pid, sigkill(pid), len(pids)))
            except ProcessLookupError:  # it died on its own in between
                continue
        self.kills.extend(done)
        return done

    def stop(self) -> None:
        """Cancel kills not yet fired (the run ended)."""
        for t in self._timers:
            t.cancel()

    def summary(self) -> dict[str, Any]:
        return {"actors_killed": len(self.kills), "rounds_with_kills": len({k.round for k in self.kills}),
                "actor_pool": max((k.pool for k in self.kills), default=0), "kill_delay_s": self.delay_s}
