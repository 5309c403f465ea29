"""Chaos row ``tune-driver-kill``: the ``rec tune`` driver SIGKILLed mid-sweep, then started again.

``rec tune --address <private 2-CPU head>`` (a driver process) sweeps ``TRIALS`` trials of one
synthetic tenant the backbone never saw (LoRA adaptation, 40 epochs, K=64, default model size,
FIFO, one trial at a time, Optuna TPE, the best trial published at the end) into a temp folder. Each time ``EVERY``
more trials have finished since the last start, the driver process (only it: the trials' workers
belong to the head and Ray ends them with their job) is SIGKILLed, and the same command is started
again ``RESTART_AFTER_S`` later, as a supervisor would; it resumes the experiment
(``Tuner.restore``, tuning/sweep.py). Tune's experiment-state period is left at its default
(``TUNE_GLOBAL_CHECKPOINT_S``: >= 10 s).

A trial "finished" = its ``result.json`` holds the trial's closing report (``final``). Counted:
trials lost (asked for, but not completed in the final results table), trials duplicated (finished
before a kill and run again after it, or more trials than asked for), recovery_s = kill -> the
first trial that finished after the restart (the restart delay, the driver's start and the restore
included). A trial interrupted by the kill (reports but no closing one) runs again from its first
epoch: trials keep no checkpoints (tuning/sweep.py); that is not counted as a duplicate.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench._results import log
from bench.chaos_driver import driver, sigkill, stop_driver
from bench.ray_head import local_head

__all__ = ["PROTOCOL", "tune_kill_row"]

TRIALS, EVERY, RESTART_AFTER_S = 9, 2, 3.0
NAME, TENANT = "chaos-tune", "videos"  # synthetic tenant 3; the backbone knows tenant 0 only
PROTOCOL = (f"bench/chaos_tune.py: rec tune --address <private 2-CPU head>, {TRIALS} trials (LoRA adaptation of the "
            f"unseen synthetic tenant, 40 epochs, K=64, FIFO, 1 at a time, Optuna, best published), Tune's default state period; "
            f"after every {EVERY} more finished trials the driver process SIGKILLed and the same command started again "
            f"{RESTART_AFTER_S:g} s later (Tuner.restore); requests = trials asked for, client_errors = driver runs "
            "after the last kill not ending rc 0 + errored trials, lost_events = trials not completed in the final "
            "table, duplicated_events = trials finished before a kill and run again + trials beyond those asked "
            "for; recovery_s = kill -> the first trial finished after the restart (max)")


def _backbone(work: Path) -> Path:
    """A small random-init backbone that knows synthetic tenant 0 (a trial's cost does not depend on what it learnt)."""
    import torch

    from rec.config import load_config
    from rec.data.synthetic import generate_tenants
    from rec.models.backbone import build_backbone
    from rec.training.checkpoint import export_backbone

    torch.manual_seed(0)
    cfg = load_config(None, ["data.synthetic.tenants=1"])  # the default model and tenant sizes
    (tenant,) = generate_tenants(cfg.data.synthetic)
    meta = {tenant.name: {"id_offset": 0, "num_items": tenant.num_items, "data_hash": tenant.content_hash()}}
    return export_backbone(work / "backbone", build_backbone(cfg.model).state_dict(), cfg, meta, {}, "bench")


def _sweep(work: Path) -> Path:
    spec = {"name": NAME, "tenants": [TENANT], "k_users": [64], "num_samples": TRIALS, "max_concurrent_trials": 1,
            "cpus_per_trial": 1, "scheduler": {"type": "fifo"},
            "search_space": {"adapt.method": "lora", "adapt.lr": {"loguniform": [1.0e-3, 1.0e-2]},
                             "adapt.epochs": 40, "adapt.patience": 40}}  # ~0.2 s per epoch: trials of ~8 s
    path = work / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _finished(exp: Path) -> dict[str, str]:
    """Trials whose ``result.json`` holds their closing report: {trial dir name: that file's text}."""
    out = {}
    for f in exp.glob("trial_*/result.json"):
        try:
            text = f.read_text()
        except OSError:
            continue
        if any(_report(line).get("final") for line in text.splitlines()):
            out[f.parent.name] = text
    return out


def _report(line: str) -> dict[str, Any]:
    """One ``result.json`` line; {} for a line still being written."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return {}


def _run_until(proc: Any, exp: Path, count: int | None, seen: dict[str, float], timeout_s: float) -> dict[str, str]:
    """Poll the trials until ``count`` have finished (None: until the driver exits); ``seen`` gets each
    trial's first moment as finished."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        done = _finished(exp)
        for t in done:
            seen.setdefault(t, time.time())
        if (count is not None and len(done) >= count) or proc.poll() is not None:
            return done
        time.sleep(0.3)
    raise TimeoutError(f"rec tune: {len(_finished(exp))} trials finished after {timeout_s:g} s, waiting for {count}")


def _count(exp: Path, kills: list[dict[str, Any]], rc: int) -> dict[str, int]:
    """Lost, duplicated and errored trials, from the final results table and the trials' own files."""
    rows = []
    if (exp / "results.csv").is_file():
        with open(exp / "results.csv") as f:
            rows = list(csv.DictReader(f))
    done, final = {r["trial_id"] for r in rows if r["status"] != "error"}, _finished(exp)
    rerun = {t for k in kills for t, text in k["finished"].items() if final.get(t) != text}
    trial_dirs = len(list(exp.glob("trial_*")))
    return {"lost": TRIALS - len(done), "duplicated": len(rerun) + max(0, trial_dirs - TRIALS), "rerun_trials": len(rerun),
            "errored": sum(r["status"] == "error" for r in rows), "rows": len(rows), "trial_dirs": trial_dirs, "rc": rc}


def tune_kill_row(kills: int, timeout_s: float = 900.0) -> dict[str, Any]:
    """See the module doc: one sweep, its driver killed ``kills`` times and restarted."""
    with local_head(num_cpus=2) as head, tempfile.TemporaryDirectory(prefix="chaos-tune-") as tmp:
        work = Path(tmp)
        argv = ["tune", "--backbone", str(_backbone(work)), "--sweep", str(_sweep(work)), "--address", head.gcs_address,
                "--storage-path", str(work / "tune"), "--verbose", "0", "data.synthetic.tenants=4",
                f"adapt.output_root={work / 'adapters'}"]
        exp, seen, done_kills = work / "tune" / NAME, {}, []
        for k in range(kills + 1):
            proc = driver(argv, work / f"driver{k}.log")
            try:
                target = None if k == kills else len(_finished(exp)) + EVERY
                done = _run_until(proc, exp, target, seen, timeout_s)
                if target is not None and proc.poll() is None:
                    t = sigkill(proc.pid)
                    running = [f.parent.name for f in exp.glob("trial_*/result.json") if f.parent.name not in done
                               and f.stat().st_size]
                    done_kills.append({"t": t, "finished": done, "interrupted": len(running)})
                    log(f"tune driver kill {k + 1}/{kills}: {len(done)} trials finished, {len(running)} interrupted")
            finally:
                stop_driver(proc)
            if target is not None:
                time.sleep(RESTART_AFTER_S)
        if proc.returncode != 0:
            log(f"rec tune exited {proc.returncode}:\n{(work / f'driver{kills}.log').read_text()[-3000:]}")
        counts = _count(exp, done_kills, proc.returncode)
    after = [min((s for s in seen.values() if s > k["t"]), default=None) for k in done_kills]
    recovery = [None if a is None else round(a - k["t"], 1) for a, k in zip(after, done_kills, strict=True)]
    return {"fault": "tune-driver-kill", "injections": len(done_kills), "requests": TRIALS,
            "client_errors": int(counts["rc"] != 0) + counts["errored"], "5xx": None, "lost_events": counts["lost"],
            "duplicated_events": counts["duplicated"], "recovery_s": None if None in recovery or not recovery else max(recovery),
            "p99_ms_during": None, "recovery_each_s": recovery,
            "finished_at_kill": [len(k["finished"]) for k in done_kills],
            "interrupted_at_kill": [k["interrupted"] for k in done_kills], **counts}
