"""bench/fed_actor_kills.py: the fedavg-drop row's killer SIGKILLs the chosen share of real processes
titled as Flower's client actors under its root, and nothing else."""

from __future__ import annotations

import os
import subprocess
import time

import psutil
import pytest

from bench.fed_actor_kills import ACTOR_TITLE, ActorKiller

TITLES = [ACTOR_TITLE, ACTOR_TITLE + ".run", ACTOR_TITLE, ACTOR_TITLE + ".run", ACTOR_TITLE, "ray::Bystander"]


@pytest.fixture
def pool():
    """Five processes titled as client actors (idle and busy) and one bystander, once their titles are set."""
    procs = [subprocess.Popen(["bash", "-c", f"exec -a '{t}' sleep 60"]) for t in TITLES]
    deadline = time.time() + 10
    while time.time() < deadline and any(psutil.Process(p.pid).cmdline()[:1] != [t] for p, t in zip(procs, TITLES)):
        time.sleep(0.05)
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_kills_the_share_of_the_pool_and_never_a_bystander(pool):
    killer = ActorKiller(0.2, last_round=3, seed=7, root_pid=os.getpid())
    first = killer.kill_now(1)
    assert len(first) == 1 and first[0].pool == 5  # 20 % of 5 actors, ".run" (busy) titles included
    victim = next(p for p in pool if p.pid == first[0].pid)
    assert victim.wait(timeout=5) == -9  # SIGKILLed
    assert [p.pid for p in pool if p.poll() is not None] == [victim.pid]
    assert pool[-1].poll() is None  # the process with another title is never chosen
    assert killer.summary() == {"actors_killed": 1, "rounds_with_kills": 1, "actor_pool": 5, "kill_delay_s": 0.25}


def test_the_choice_is_seeded_per_round():
    pids = [101, 205, 333, 404, 512]
    a, b = ActorKiller(0.4, last_round=9, seed=3), ActorKiller(0.4, last_round=9, seed=3)
    assert a.choose(pids, 4) == b.choose(list(reversed(pids)), 4)  # the pool's order does not matter
    assert len(a.choose(pids, 4)) == 2 and set(a.choose(pids, 4)) <= set(pids)
    assert len({tuple(a.choose(pids, r)) for r in range(1, 9)}) > 1  # rounds differ
    assert a.choose([], 1) == [] and len(ActorKiller(0.01, last_round=1).choose(pids, 1)) == 1  # at least one


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
