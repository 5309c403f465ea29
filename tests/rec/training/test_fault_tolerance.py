"""A Ray Train worker killed mid-run costs at most one epoch: the run resumes from its last checkpoint.

``pretrain()`` runs in a background thread on the session's local Ray (``ray_local``); the test
thread watches the run's storage folder and, once Ray Train has registered the first per-epoch
checkpoint, SIGKILLs one ``RayTrainWorker`` process (Ray 2.60 sets that actor process's title to
``ray::RayTrainWorker`` or ``ray::RayTrainWorker.<method>``). ``FailureConfig(max_failures=2)``
restarts the worker group, and the restarted ranks load the latest checkpoint.

"Registered" is read from ``checkpoint_manager_snapshot.json``, which the Train V2 controller
rewrites after each reported checkpoint: a ``checkpoint_*`` folder can be on disk a moment before
its report reaches the controller, and only a registered checkpoint is a resume point.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from bench.chaos_driver import head_processes
from rec.config import load_config
from rec.io.artifacts import ArtifactError, read_manifest
from rec.training.ray_train import pretrain
from tests.conftest import tiny_overrides

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # integration: it kills a Ray worker process

EPOCHS = 5
TIMEOUT_S = 420  # the worker group starts twice; each start is ~20-40 s on 2 busy cores
WORKER_TITLE = "ray::RayTrainWorker"


def _train_workers(started_after: float) -> list[psutil.Process]:
    """Ray Train worker processes of this run: our descendants (the session's Ray), and newer than
    ``started_after`` (a worker of an earlier test may still be exiting)."""
    return head_processes(os.getpid(), WORKER_TITLE, started_after)


def _registered_epochs(run_dir: Path) -> list[int]:
    """Epochs of the checkpoints the Train controller has registered (its snapshot file)."""
    snap = run_dir / "checkpoint_manager_snapshot.json"
    try:
        data = json.loads(snap.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # absent or being rewritten
        return []
    return sorted(int(c["metrics"]["epoch"]) for c in data.get("checkpoint_results", []))


def _complete_checkpoint_epochs(run_dir: Path) -> list[int]:
    """Epochs of the ``checkpoint_*`` folders whose train-state artifact is complete on disk."""
    epochs = []
    for d in run_dir.glob("checkpoint_*"):
        try:
            epochs.append(int(read_manifest(d / "state", verify=False, kind="train-state")["state"]["epoch"]))
        except (ArtifactError, FileNotFoundError, KeyError):
            continue  # still being copied in
    return sorted(epochs)


def test_killed_worker_loses_at_most_one_epoch(ray_local, tmp_path, text_cache):
    overrides = tiny_overrides(
        tmp_path,
        text_cache,
        **{
            "train.num_workers": 2,
            "train.epochs": EPOCHS,
            "train.patience": EPOCHS + 1,  # no early stop: the run must go through every epoch
            "train.max_failures": 2,
            "train.run_name": "fault-tolerance",
            "train.resume": "false",
        },
    )
    cfg = load_config(None, overrides)
    run_dir = tmp_path / "ray" / cfg.train.run_name
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["result"] = pretrain(cfg)
        except Exception as e:  # re-raised in the test thread below
            outcome["error"] = e

    thread = threading.Thread(target=train, name="pretrain", daemon=True)
    deadline = time.monotonic() + TIMEOUT_S
    started = time.time()
    thread.start()

    killed = None
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        registered = _registered_epochs(run_dir)
        workers = _train_workers(started)
        if registered and workers:
            on_disk = _complete_checkpoint_epochs(run_dir)
            victim = workers[0]
            os.kill(victim.pid, signal.SIGKILL)
            killed = {"pid": victim.pid, "registered": registered, "on_disk": on_disk}
        time.sleep(0.02)
    assert killed is not None, f"never saw a registered checkpoint with live workers (outcome: {outcome})"
    assert killed["registered"][-1] < EPOCHS - 1, f"killed after the last epoch: {killed}"

    thread.join(max(0.0, deadline - time.monotonic()))
    assert not thread.is_alive(), f"pretrain did not finish within {TIMEOUT_S} s after killing {killed}"
    if "error" in outcome:
        raise outcome["error"]
    res = outcome["result"]

    assert res.epochs == EPOCHS
    epochs = [int(h["epoch"]) for h in res.history]
    assert epochs[-1] == EPOCHS - 1
    resumed = sorted({int(h["resumed_from"]) for h in res.history if h["resumed_from"] >= 0})
    assert resumed, f"no epoch reports a resume after killing {killed}; history epochs: {epochs}"
    # At most one epoch lost: the restart resumed from the newest checkpoint registered at kill time
    # (never from an older one), and every complete checkpoint folder then on disk was at most one
    # epoch ahead of that resume point.
    assert resumed[0] >= killed["registered"][-1], f"resumed from {resumed[0]}, kill state {killed}"
    assert max(killed["on_disk"], default=resumed[0]) - resumed[0] <= 1, f"resumed from {resumed[0]}, kill state {killed}"
    after = [h for h in res.history if h["resumed_from"] >= 0]
    assert [int(h["epoch"]) for h in after] == list(range(resumed[0] + 1, EPOCHS))

    manifest = read_manifest(res.checkpoint, kind="backbone")
    assert manifest["epochs_run"] == EPOCHS
