"""Chaos row ``pretrain-worker-kill``: Ray Train workers SIGKILLed during one ``rec pretrain`` run.

``rec pretrain --address <private head>`` (a driver process) on MovieLens-100K from the data root
(943 users, 1,682 titled items), a small backbone (d_model 128, 2 layers, window 100), 2 Ray Train
workers of 1 CPU, ``train.epochs`` epochs with no early stop, ``train.max_failures`` = kills + 1.
Each time the controller has registered a checkpoint newer than at the previous kill (read from
``checkpoint_manager_snapshot.json``, as tests/rec/training/test_fault_tolerance.py does), the bench
waits half the shortest gap seen between two epochs' registrations (about half an epoch) and
SIGKILLs one ``ray::RayTrainWorker`` process of the current worker group. ``FailureConfig``
restarts the group, which resumes from the latest registered checkpoint. The controller registers
a checkpoint when it polls the workers (~2 s), so epochs must be longer than that for the
one-epoch bound to hold: with 2-s epochs each kill lost 2 whole epochs (docs/distributed.md).

Per kill: the newest complete checkpoint on disk at the kill, the epoch the restart resumed after
(``resumed_from`` of the final history), epochs lost = the first minus the second (the epoch in
progress is always redone, so this counts whole epochs only), recovery_s = kill -> the restarted
group registered a checkpoint newer than at the kill. The run must end with exit code 0 and a
backbone of every epoch.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench._results import log
from bench.chaos_driver import driver, head_processes, sigkill, stop_driver
from bench.ray_head import local_head

__all__ = ["PROTOCOL", "pretrain_kill_row"]

WORKER_TITLE = "ray::RayTrainWorker"
RUN_NAME = "chaos-pretrain"
WINDOW = 100  # ml-100k users have ~106 ratings: epochs of several seconds, not the 2 s report floor
PROTOCOL = ("bench/chaos_pretrain.py: rec pretrain --address <private 2-CPU head> on ml-100k from the data root, "
            "d_model 128, 2 layers, window 100, 2 Ray Train workers, 8 epochs, no early stop, train.max_failures = kills + 1; "
            "after each checkpoint registered past the previous kill, half an epoch later one RayTrainWorker "
            "SIGKILLed; requests = runs, client_errors = runs not ending rc 0 with every epoch, lost_events = whole "
            "epochs lost (newest complete checkpoint at the kill - resumed_from), duplicated_events = epochs twice in "
            "the final history; recovery_s = kill -> the restarted group registered a newer checkpoint (max)")


def _config(work: Path, epochs: int, max_failures: int) -> Path:
    cfg = {"data": {"sources": [{"format": "movielens-100k", "path": "ml-100k", "name": "ml-100k"}], "max_seq_len": WINDOW},
           "model": {"d_model": 128, "n_layers": 2, "n_heads": 2, "max_len": WINDOW, "dropout": 0.1},
           "train": {"epochs": epochs, "patience": epochs + 1, "batch_size": 128, "lr": 0.002, "num_workers": 2,
                     "cpus_per_worker": 1, "max_failures": max_failures, "output_dir": str(work / "out"),
                     "run_name": RUN_NAME, "resume": False}}
    path = work / "pretrain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _registered_epochs(run_dir: Path) -> list[int]:
    """Epochs of the checkpoints the Train controller has registered (its snapshot file)."""
    try:
        data = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # absent or being rewritten
        return []
    return sorted(int(c["metrics"]["epoch"]) for c in data.get("checkpoint_results", []))


def _complete_states(run_dir: Path) -> dict[int, dict[str, Any]]:
    """The training state of every ``checkpoint_*`` folder whose train-state artifact is complete, by epoch."""
    from rec.io.artifacts import ArtifactError, read_manifest

    out = {}
    for d in run_dir.glob("checkpoint_*"):
        try:
            state = read_manifest(d / "state", verify=False, kind="train-state")["state"]
        except (ArtifactError, FileNotFoundError, KeyError):
            continue  # still being copied in
        out[int(state["epoch"])] = state
    return out


class _Watch:
    """The run as the poller sees it: when each epoch's checkpoint was first registered, the kills."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.seen, self.kills = run_dir, {}, []

    def poll(self) -> list[int]:
        registered = _registered_epochs(self.run_dir)
        now = time.time()
        for e in registered:
            self.seen.setdefault(e, now)
        for k in self.kills:
            if k.get("recovery_s") is None and registered and registered[-1] > k["registered"]:
                k["recovery_s"] = round(now - k["t"], 1)
        return registered

    def epoch_s(self) -> float | None:
        """The shortest gap between two consecutive epochs' registrations (a steady-state epoch)."""
        gaps = [self.seen[e] - self.seen[e - 1] for e in self.seen if e - 1 in self.seen]
        return min(gaps) if gaps else None


def _inject(proc: Any, head_pid: int, watch: _Watch, kills: int, epochs: int, timeout_s: float) -> None:
    """Kill one worker of the current group ``kills`` times (module doc), then wait for the run to end."""
    deadline, since, last = time.time() + timeout_s, 0.0, -1
    while proc.poll() is None and time.time() < deadline:
        registered = watch.poll()
        workers = head_processes(head_pid, WORKER_TITLE, since)
        due = len(watch.kills) < kills and registered and registered[-1] > last and workers
        if due and registered[-1] < epochs - 2 and watch.epoch_s() is not None:
            time.sleep(watch.epoch_s() / 2)  # mid-epoch
            registered = watch.poll()
            on_disk = max(_complete_states(watch.run_dir), default=-1)
            victim = workers[0]
            if not victim.is_running():
                continue
            t = sigkill(victim.pid)
            watch.kills.append({"pid": victim.pid, "t": t, "registered": registered[-1], "on_disk": on_disk,
                                "recovery_s": None})
            since, last = t, registered[-1]
            log(f"pretrain kill {len(watch.kills)}/{kills}: worker {victim.pid}, registered epoch {registered[-1]}, "
                f"newest complete checkpoint epoch {on_disk}")
        time.sleep(0.1)
    if proc.poll() is None:
        raise TimeoutError(f"rec pretrain not finished {timeout_s:g} s after it started")


def _summary(watch: _Watch, rc: int, epochs: int) -> dict[str, Any]:
    states = _complete_states(watch.run_dir)
    history = [h for h in (states[max(states)]["history"] if states else []) if int(h["epoch"]) >= 0]
    run_epochs = [int(h["epoch"]) for h in history]
    resumes = list(dict.fromkeys(int(h["resumed_from"]) for h in history if int(h["resumed_from"]) >= 0))
    for k, r in zip(watch.kills, resumes, strict=False):
        k["resumed_from"], k["epochs_lost"] = r, k["on_disk"] - r
    complete = rc == 0 and sorted(run_epochs) == list(range(epochs))
    lost = [k.get("epochs_lost") for k in watch.kills]
    return {"fault": "pretrain-worker-kill", "injections": len(watch.kills), "requests": 1, "client_errors": int(not complete),
            "5xx": None, "lost_events": sum(x for x in lost if x is not None) if None not in lost else None,
            "duplicated_events": len(run_epochs) - len(set(run_epochs)),
            "recovery_s": max((k["recovery_s"] for k in watch.kills if k["recovery_s"] is not None), default=None),
            "p99_ms_during": None, "epochs": epochs, "driver_rc": rc, "epochs_in_history": run_epochs,
            "restarts_seen": len(resumes), "epoch_train_s": [round(float(h["epoch_train_s"]), 1) for h in history],
            "kills": [{k_: v for k_, v in k.items() if k_ not in ("t", "pid")} for k in watch.kills]}


def pretrain_kill_row(kills: int, epochs: int = 8, timeout_s: float = 1500.0) -> dict[str, Any]:
    """See the module doc: one ``rec pretrain`` run, ``kills`` worker kills."""
    with local_head(num_cpus=2) as head, tempfile.TemporaryDirectory(prefix="chaos-pretrain-") as tmp:
        work = Path(tmp)
        watch = _Watch(work / "out" / "ray" / RUN_NAME)
        proc = driver(["pretrain", "--config", str(_config(work, epochs, kills + 1)), "--address", head.gcs_address],
                      work / "driver.log")
        try:
            _inject(proc, head.pid, watch, kills, epochs, timeout_s)
        finally:
            stop_driver(proc)
        if proc.returncode != 0:
            log(f"rec pretrain exited {proc.returncode}:\n{(work / 'driver.log').read_text()[-3000:]}")
        row = _summary(watch, proc.returncode, epochs)
    log(f"pretrain-worker-kill: {row}")
    return row
