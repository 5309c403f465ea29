"""Chaos row ``readapt-worker-kill``: SIGKILL of a ``rec readapt`` Ray job mid-run.

The world of bench/readapt.py (backbone, one synthetic tenant live as v1 with a LoRA adapter,
2,000 logged click/purchase events) on a private Ray head; one ``trigger_pass`` submits the round
as a Ray job, and the job's ``rec readapt`` process (where ``adapt_tenant`` trains: a round has no
Ray Train workers) is SIGKILLed ``kill_after_s`` after it appears. Checked: the job's final status,
the live version and the set of complete versions unchanged, no staging folder left behind, and
whether the next ``trigger_pass`` submits the round again (a retry) or not (and why).
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

__all__ = ["readapt_kill_row"]


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
    raise TimeoutError(f"job {submission} not finished {timeout_s:g} s after its process was killed")


def readapt_kill_row(kills: int, kill_after_s: float = 12.0) -> dict[str, Any]:
    """See the module doc; ``kills`` rounds, each killed."""
    from bench.readapt import EVENTS_PER_ROUND, _users_for, build_world
    from rec.config import ReadaptConfig
    from rec.feedback.replay import replay_interactions
    from rec.feedback.trigger import job_hooks, readapt_entrypoint, trigger_pass
    from rec.serving.store import ArtifactRoot

    runs = []
    with local_head(num_cpus=2) as head, tempfile.TemporaryDirectory(prefix="chaos-readapt-") as tmp:
        log("building the world (backbone, v1 LoRA adapter, serving root)")
        ckpt, tenant, root = build_world(Path(tmp))
        store = ArtifactRoot(root)
        rcfg = ReadaptConfig(min_gain=-1.0, every_events=EVENTS_PER_ROUND, min_events=EVENTS_PER_ROUND)
        overrides = ["feedback.readapt.min_gain=-1.0", f"feedback.readapt.every_events={EVENTS_PER_ROUND}",
                     f"feedback.readapt.min_events={EVENTS_PER_ROUND}"]
        submit, is_running = job_hooks(head.dashboard, lambda t: readapt_entrypoint(t, root, ckpt, None, overrides),
                                       rcfg.job_num_cpus)
        first_user = 0
        for k in range(kills):
            users, first_user = _users_for(tenant, first_user, EVENTS_PER_ROUND)
            replay_interactions(root, tenant, users, time.time() - 86400.0 + k * 3 * EVENTS_PER_ROUND, step_s=1.0,
                                version=f"v{store.current_version(tenant.name)}", seed=k)
            live, versions = store.current_version(tenant.name), store.versions(tenant.name)
            ((decision, submission, _),) = trigger_pass(root, rcfg, submit, is_running)
            if submission is None:
                raise RuntimeError(f"kill {k + 1}: the trigger did not submit ({decision.reason})")
            victim = _job_process(root)
            time.sleep(kill_after_s)
            alive = victim.is_running()
            if alive:
                os.kill(victim.pid, signal.SIGKILL)
            status = _wait_terminal(head.dashboard, submission)
            ((again, resubmitted, _),) = trigger_pass(root, rcfg, submit, is_running)
            staging = [p.name for p in store.tenant_dir(tenant.name).iterdir() if p.name.startswith(".staging")]
            runs.append({"killed_mid_run": alive, "job_status": status,
                         "live_version_untouched": store.current_version(tenant.name) == live,
                         "versions_untouched": store.versions(tenant.name) == versions, "staging_left": staging,
                         "resubmitted": resubmitted is not None, "trigger_after_kill": again.reason})
            log(f"readapt kill {k + 1}/{kills}: {runs[-1]}")
            if resubmitted is not None:
                _wait_terminal(head.dashboard, resubmitted, timeout_s=300)
    clean = all(r["live_version_untouched"] and r["versions_untouched"] and not r["staging_left"] for r in runs)
    return {"fault": "readapt-worker-kill", "injections": kills, "requests": None, "client_errors": None, "5xx": None,
            "lost_events": None, "duplicated_events": None, "recovery_s": None, "p99_ms_during": None,
            "failed_cleanly": clean, "retried": all(r["resubmitted"] for r in runs), "runs": runs}
