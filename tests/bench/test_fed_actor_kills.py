"""bench/fed_actor_kills.py: the fedavg-drop row's killer SIGKILLs the chosen share of real processes
titled as Flower's client actors under its root, and nothing else."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from bench.fed_actor_kills import ACTOR_TITLE, ActorKiller


def _titled(title: str) -> subprocess.Popen:
    return subprocess.Popen(["bash", "-c", f"exec -a '{title}' sleep 60"])


@pytest.fixture
def pool():
    procs = [_titled(ACTOR_TITLE + (".run" if i % 2 else "")) for i in range(5)] + [_titled("ray::Bystander")]
    time.sleep(0.3)  # let exec set the titles
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_kills_the_share_of_the_pool_seeded_per_round(pool):
    killer = ActorKiller(0.2, last_round=3, seed=7, root_pid=os.getpid())
    first = killer.kill_now(1)
    assert len(first) == 1 and first[0].pool == 5  # 20 % of 5 actors, ".run" (busy) titles included
    for p in pool:
        p.wait(timeout=5) if p.pid == first[0].pid else None
    dead = [p for p in pool if p.poll() is not None]
    assert [p.pid for p in dead] == [first[0].pid] and dead[0].returncode == -9
    assert pool[-1].poll() is None  # the process with another title is never chosen
    again = ActorKiller(0.2, last_round=3, seed=7, root_pid=os.getpid())
    survivors = sorted(p.pid for p in pool[:5] if p.poll() is None)
    assert again.kill_now(1)[0].pid in survivors and killer.summary()["actors_killed"] == 1


def test_on_round_arms_the_next_round_and_stops_after_the_last(pool):
    killer = ActorKiller(0.4, last_round=2, seed=0, delay_s=0.05, root_pid=os.getpid())
    killer.on_round(2, None, None)  # the last round is done: nothing to arm
    killer.on_round(0, None, None)
    deadline = time.time() + 5
    while not killer.kills and time.time() < deadline:
        time.sleep(0.05)
    assert [k.round for k in killer.kills] == [1, 1]  # round(0.4 * 5) actors, in round 1
    assert killer.summary()["rounds_with_kills"] == 1


def test_refuses_a_share_outside_0_1():
    with pytest.raises(ValueError, match="must be in"):
        ActorKiller(1.0, last_round=3)
