"""Chaos row ``readapt-worker-kill``: SIGKILL of a ``rec readapt`` Ray job mid-round, then the trigger's resubmission.

The world of bench/readapt.py (backbone, one synthetic tenant live as v1 with a LoRA adapter,
2,000 logged click/purchase events per round) on a private Ray head. Per injection: new events are
replayed, one ``trigger_pass`` submits the round as a Ray job, and the job's ``rec readapt`` process
(where ``adapt_tenant`` trains: a round has no Ray Train workers) is SIGKILLed ``kill_after_s``
after it appears. Then ``trigger_pass`` runs again as the RayCronJob would: the lost round is
resubmitted (``feedback.readapt.resubmit_attempts``, default 1) and its job is awaited.

Counted per round: jobs submitted (``requests``); a round without a valid outcome (no round record
after the resubmission: neither published nor kept with the gate's reason) is a client error;
versions lost (a complete version that disappeared, or a published record whose version is not
complete) and versions published twice (more new versions than published records); recovery_s =
kill -> the resubmitted round's record (its ``finished_unix``). ``min_gain=-1`` so a round that
completes publishes.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._results import log
from bench.ray_head import local_head

__all__ = ["PROTOCOL", "readapt_kill_row"]

PROTOCOL = ("bench/chaos_training.py: the world of bench/readapt.py on a private head; per injection 2,000 new events, "
            "trigger_pass submits rec readapt as a Ray job, its process (where adapt_tenant trains: no Ray Train workers "
            "in a round) SIGKILLed 10 s after it appeared, then trigger_pass again (the RayCronJob's next pass: "
            "resubmit_attempts 1) and the resubmitted job awaited; requests = jobs submitted, client_errors = rounds "
            "without a round record (published or kept with the gate's reason) after the resubmission, lost_events = "
            "complete versions lost or published records without their version, duplicated_events = versions beyond "
            "one per published record; recovery_s = kill -> the resubmitted round's record (max); min_gain -1")


def _job_process(root: Path, timeout_s: float = 120.0) -> Any:
    """The ``rec readapt`` process working on ``root`` (psutil.Process)."""
    import psutil

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if "readapt" in cmd and str(root) in cmd and "--backbone" in cmd and "/bin/sh" not in cmd:
                return p
        time.sleep(0.2)
    raise TimeoutError(f"no `rec readapt` process for {root} after {timeout_s:g} s")


def _wait_terminal(dashboard: str, submission: str, timeout_s: float = 120.0) -> str:
    from ray.job_submission import JobSubmissionClient

    client, deadline = JobSubmissionClient(dashboard), time.time() + timeout_s
    while time.time() < deadline:
        status = client.get_job_status(submission)
        if status.is_terminal():
            return str(status.value)
        time.sleep(0.3)
    raise TimeoutError(f"job {submission} not finished within {timeout_s:g} s")


class _World:
    """The bench world on a private head: the serving root, the tenant and the trigger's job hooks."""

    def __init__(self, work: Path, dashboard: str) -> None:
        from bench.readapt import EVENTS_PER_ROUND, build_world
        from rec.config import ReadaptConfig
        from rec.feedback.trigger import job_hooks, readapt_entrypoint
        from rec.serving.store import ArtifactRoot

        log("building the world (backbone, v1 LoRA adapter, serving root)")
        ckpt, self.tenant, self.root = build_world(work)
        self.store, self.dashboard, self.first_user, self.submitted = ArtifactRoot(self.root), dashboard, 0, 0
        self.rcfg = ReadaptConfig(min_gain=-1.0, every_events=EVENTS_PER_ROUND, min_events=EVENTS_PER_ROUND)
        overrides = ["feedback.readapt.min_gain=-1.0", f"feedback.readapt.every_events={EVENTS_PER_ROUND}",
                     f"feedback.readapt.min_events={EVENTS_PER_ROUND}"]
        self.submit, self.is_running = job_hooks(
            dashboard, lambda t: readapt_entrypoint(t, self.root, ckpt, None, overrides), self.rcfg.job_num_cpus)

    def new_events(self, k: int) -> None:
        from bench.readapt import EVENTS_PER_ROUND, _users_for
        from rec.feedback.replay import replay_interactions

        users, self.first_user = _users_for(self.tenant, self.first_user, EVENTS_PER_ROUND)
        replay_interactions(self.root, self.tenant, users, time.time() - 86400.0 + k * 3 * EVENTS_PER_ROUND, step_s=1.0,
                            version=f"v{self.store.current_version(self.tenant.name)}", seed=k)

    def trigger(self) -> tuple[Any, str | None]:
        """One trigger pass: (decision, submission id or None)."""
        from rec.feedback.trigger import trigger_pass

        ((decision, submission, _),) = trigger_pass(self.root, self.rcfg, self.submit, self.is_running)
        self.submitted += submission is not None
        return decision, submission

    def rounds(self) -> list[dict[str, Any]]:
        from rec.feedback.rounds import read_records

        return read_records(self.root, self.tenant.name, "round")


def _kill_round(world: _World, k: int, kill_after_s: float) -> dict[str, Any]:
    """Injection ``k``: submit, kill the job's process, resubmit, await; what happened."""
    name = world.tenant.name
    world.new_events(k)
    versions, live, rounds_before = world.store.versions(name), world.store.current_version(name), len(world.rounds())
    decision, submission = world.trigger()
    if submission is None:
        raise RuntimeError(f"kill {k + 1}: the trigger did not submit ({decision.reason})")
    victim = _job_process(world.root)
    time.sleep(kill_after_s)
    alive = victim.is_running()
    t_kill = time.time()
    if alive:
        os.kill(victim.pid, signal.SIGKILL)
    run = {"killed_mid_run": alive, "job_status": _wait_terminal(world.dashboard, submission),
           "staging_left": [p.name for p in world.store.tenant_dir(name).iterdir() if p.name.startswith(".staging")],
           "untouched_by_kill": world.store.versions(name) == versions and world.store.current_version(name) == live}
    again, resubmitted = world.trigger()
    run.update(resubmitted=resubmitted is not None, trigger_after_kill=again.reason)
    if resubmitted is not None:
        run["resubmitted_status"] = _wait_terminal(world.dashboard, resubmitted, timeout_s=600)
    new_rounds = world.rounds()[rounds_before:]
    published = [r for r in new_rounds if r["decision"] == "published"]
    valid = [r for r in new_rounds if r["decision"] == "published" or (r["decision"] == "kept" and r.get("reason"))]
    after = world.store.versions(name)
    added = [v for v in after if v not in versions]
    run.update(rounds_recorded=len(new_rounds), outcome=[r["decision"] for r in new_rounds], valid=len(valid) == 1,
               versions_added=added, live=world.store.current_version(name),
               lost=sum(v not in after for v in versions) + sum(r.get("version") not in after for r in published),
               duplicated=max(0, len(added) - len(published)) + max(0, len(new_rounds) - 1),
               recovery_s=round(valid[0]["finished_unix"] - t_kill, 1) if valid and alive else None)
    log(f"readapt kill {k + 1}: {run}")
    return run


def readapt_kill_row(kills: int, kill_after_s: float = 10.0) -> dict[str, Any]:
    """See the module doc; ``kills`` rounds, each killed once and resubmitted."""
    with local_head(num_cpus=2) as head, tempfile.TemporaryDirectory(prefix="chaos-readapt-") as tmp:
        world = _World(Path(tmp), head.dashboard)
        runs = [_kill_round(world, k, kill_after_s) for k in range(kills)]
        submitted = world.submitted
    recovery = [r["recovery_s"] for r in runs if r["recovery_s"] is not None]
    clean = all(r["untouched_by_kill"] and not r["staging_left"] for r in runs)
    return {"fault": "readapt-worker-kill", "injections": sum(r["killed_mid_run"] for r in runs), "requests": submitted,
            "client_errors": sum(not r["valid"] for r in runs), "5xx": None,
            "lost_events": sum(r["lost"] for r in runs), "duplicated_events": sum(r["duplicated"] for r in runs),
            "recovery_s": max(recovery) if recovery else None, "p99_ms_during": None,
            "failed_cleanly": clean, "retried": all(r["resubmitted"] for r in runs), "runs": runs}
