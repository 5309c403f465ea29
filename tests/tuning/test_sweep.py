"""Ray Tune sweeps: per-(tenant, K) searcher and ASHA, a real sweep, publishing, and resume after a kill."""

from __future__ import annotations

import csv
import glob
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from ray.tune.schedulers import TrialScheduler

from rec.adaptation.artifacts import list_versions, load_adapter
from rec.config import apply_overrides, config_from_dict
from rec.training.checkpoint import LoadedBackbone, export_backbone
from tuning.search_spaces import SweepError, load_sweep
from tuning.scheduler import PerGroupScheduler
from tuning.search import PerGroupSearcher
from tuning.sweep import run_sweep
from tuning.trial import METRIC

REPO = Path(__file__).resolve().parents[2]
NEW_TENANTS = ["podcasts", "videos"]  # synthetic tenants 3-4: the small backbone pretrained on the first two


def _sweep(name: str, tenants: list[str], num_samples: int, **kw) -> dict:
    return {
        "name": name,
        "tenants": tenants,
        "k_users": [16],
        "search_space": {
            "adapt.method": {"choice": ["lora", "head"]},
            "adapt.lr": {"loguniform": [1.0e-3, 1.0e-2]},
            "adapt.lora.rank": {"choice": [2, 4]},
            "adapt.lora.target_modules": {"choice": [["q_proj", "v_proj"], ["fc1", "fc2", "adaptor.proj"]]},
            "adapt.epochs": 4,
            "adapt.patience": 4,
        },
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "num_samples": num_samples,
        "max_concurrent_trials": 2,
        "cpus_per_trial": 0.5,
        **kw,
    }


# --- unit: routing per (tenant, K) --------------------------------------------------------------
def _trial(tid: str, tenant: str, status: str = "RUNNING", last: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid, config={"tenant": tenant, "k_users": 16}, status=status,
                           TERMINATED="TERMINATED", last_result=last or {})


def test_asha_rungs_are_per_tenant_and_rebuilt_after_restore():
    sched = PerGroupScheduler(max_t=8, grace_period=1, reduction_factor=2)
    a1, a2, b1 = _trial("a1", "a"), _trial("a2", "a"), _trial("b1", "b")
    for t in (a1, a2, b1):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, a1, {"epoch": 1, METRIC: 0.9}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, a2, {"epoch": 1, METRIC: 0.1}) == TrialScheduler.STOP
    # one shared ASHA would stop b1 too (0.2 < median of 0.9 and 0.1): tenants have their own rungs
    assert sched.on_trial_result(None, b1, {"epoch": 1, METRIC: 0.2}) == TrialScheduler.CONTINUE

    fresh = PerGroupScheduler(max_t=8, grace_period=1, reduction_factor=2)  # Tune never checkpoints schedulers
    fresh.on_trial_add(None, _trial("a1", "a", "TERMINATED", {"epoch": 4, METRIC: 0.9}))
    late = _trial("a3", "a")
    fresh.on_trial_add(None, late)
    assert fresh.on_trial_result(None, late, {"epoch": 4, METRIC: 0.5}) == TrialScheduler.STOP


def test_searcher_fills_groups_evenly_and_survives_save_restore(tmp_path):
    from ray import tune
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    def searcher():
        subs = {(t, 16): OptunaSearch(space=OptunaSearch.convert_search_space({"adapt.lr": tune.loguniform(1e-4, 1e-2)}),
                                      metric=METRIC, mode="max", seed=0) for t in ("a", "b")}
        return PerGroupSearcher(subs, num_samples=2)

    s = searcher()
    got = [s.suggest(f"t{i}") for i in range(4)]
    assert [g["tenant"] for g in got] == ["a", "b", "a", "b"] and all(g["k_users"] == 16 for g in got)
    assert all(1e-4 <= g["adapt.lr"] <= 1e-2 for g in got)
    s.on_trial_complete("t0", {METRIC: 0.3, "training_iteration": 1})
    s.save(str(tmp_path / "s.pkl"))
    assert s.suggest("t4") == Searcher.FINISHED
    r = searcher()
    r.restore(str(tmp_path / "s.pkl"))
    assert r.suggest("t5") == Searcher.FINISHED  # all 4 trials were already issued before the save
    r.on_trial_complete("t1", {METRIC: 0.2, "training_iteration": 1})  # routed to tenant b's study


# --- a real sweep on the session Ray --------------------------------------------------------------
@pytest.fixture(scope="module")
def backbone_dir(small_backbone, tmp_path_factory):  # noqa: F811
    b = small_backbone
    return export_backbone(tmp_path_factory.mktemp("tune-bb") / "checkpoint", b.model.state_dict(), b.cfg, b.tenants, {}, b.manifest.get("text_model"))


def _base_cfg(backbone, out: Path):
    tree = backbone.cfg.model_dump(mode="json")
    return config_from_dict(apply_overrides(tree, ["data.synthetic.tenants=4", f"adapt.output_root={out / 'adapters'}"]))


@pytest.fixture(scope="module")
def swept(small_backbone, backbone_dir, ray_local, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("sweep")
    spec = load_sweep(_sweep("two-tenants", NEW_TENANTS, 3))
    cfg = _base_cfg(small_backbone, out)
    t0 = time.perf_counter()
    res = run_sweep(spec, cfg, backbone_dir, storage_path=out / "tune", verbose=0)
    print(f"sweep of {len(res.rows)} trials: {time.perf_counter() - t0:.1f} s")
    return SimpleNamespace(spec=spec, cfg=cfg, res=res, out=out, backbone=small_backbone)


@pytest.mark.slow
def test_sweep_tags_trials_per_tenant_and_uses_optuna_and_asha(swept):
    res = swept.res
    assert len(res.rows) == 6 and res.errors == 0 and not res.resumed
    assert sorted(r["tenant"] for r in res.rows) == sorted(NEW_TENANTS * 3)
    assert {r["status"] for r in res.rows} <= {"completed", "early-stopped (patience)", "stopped (ASHA)"}
    for d in res.experiment_dir.glob("trial_*"):
        config = json.loads((d / "params.json").read_text())
        lines = [json.loads(x) for x in (d / "result.json").read_text().splitlines()]
        assert lines and all(x["tenant"] == config["tenant"] and x["k"] == "16" for x in lines)
        assert all(0.0 <= x[METRIC] <= 1.0 for x in lines)
    tuner = pickle.loads((res.experiment_dir / "tuner.pkl").read_bytes())
    assert type(tuner["_tune_config"].scheduler).__name__ == "PerGroupScheduler"
    (state_file,) = glob.glob(str(res.experiment_dir / "searcher-state-*.pkl"))
    searchers = pickle.loads(Path(state_file).read_bytes())["_searchers"]
    assert set(searchers) == {(t, 16) for t in NEW_TENANTS}
    assert all(type(s.inner).__name__ == "OptunaSearch" for s in searchers.values())


@pytest.mark.slow
def test_best_adapter_per_tenant_is_published_with_the_tune_block(swept):
    res, root = swept.res, swept.out / "adapters"
    assert len(res.best) == 2 and not res.missing
    for b in res.best:
        group = [r for r in res.rows if r["tenant"] == b["tenant"]]
        top = max(group, key=lambda r: (r["val_ndcg@10"], r["trial_id"]))
        assert b["trial_id"] == top["trial_id"] and top["best"]
        assert list_versions(root, b["tenant"]) == [1]
        manifest = json.loads((Path(b["adapter"]) / "manifest.json").read_text())
        block = manifest["tune"]
        assert block["trial_id"] == b["trial_id"] and block["experiment"] == str(res.experiment_dir)
        assert block["val_ndcg@10"] == pytest.approx(top["val_ndcg@10"])
        assert block["best_config"]["adapt.tenant"] == b["tenant"] and block["best_config"]["adapt.method"] == top["adapt.method"]
        assert manifest["method"] == top["adapt.method"] and manifest["k_users"] == 16
        # the driver-side re-run reproduces the trial (same seed, same threads)
        assert b["rerun_val_ndcg"] == pytest.approx(top["val_ndcg@10"], abs=1e-6)
        load_adapter(b["adapter"], swept.backbone.model, swept.backbone.checksum)


@pytest.mark.slow
def test_results_table_is_written(swept):
    res = swept.res
    with open(res.csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert {"tenant", "k", "trial_id", "adapt.method", "adapt.lr", "adapt.lora.rank", "adapt.lora.target_modules",
            "val_ndcg@10", "epochs", "status"} <= set(rows[0])
    assert sum(r["best"] == "True" for r in rows) == 2
    md = res.md_path.read_text()
    assert "## Best per (tenant, K)" in md and md.count("✓") == 2 and all(r["trial_id"] in md for r in rows)


@pytest.mark.slow
def test_rerun_of_a_finished_sweep_restores_without_new_trials_or_versions(swept, backbone_dir):
    again = run_sweep(swept.spec, swept.cfg, backbone_dir, storage_path=swept.out / "tune", verbose=0)
    assert again.resumed and sorted(r["trial_id"] for r in again.rows) == sorted(r["trial_id"] for r in swept.res.rows)
    assert [b["adapter"] for b in again.best] == [b["adapter"] for b in swept.res.best]
    assert all(list_versions(swept.out / "adapters", t) == [1] for t in NEW_TENANTS)
    changed = swept.spec.model_copy(update={"num_samples": 4})
    with pytest.raises(SweepError, match="different sweep"):
        run_sweep(changed, swept.cfg, backbone_dir, storage_path=swept.out / "tune", verbose=0)


def test_unknown_tenant_and_k_too_large_fail_before_any_trial(tmp_path):
    # Only the backbone's config and tenant list are read before the first trial: no weights needed.
    cfg = config_from_dict(apply_overrides({}, ["data.synthetic.tenants=4", "data.synthetic.users_per_tenant=40",
                                                "data.synthetic.items_per_tenant=30"]))
    base = LoadedBackbone(None, cfg, {"books": {}, "courses": {}}, {}, "0" * 64)
    with pytest.raises(SweepError, match=r"tenants \['posters'\] are not in the configured data"):
        run_sweep(load_sweep(_sweep("x", ["posters"], 1)), cfg, base, storage_path=tmp_path)
    with pytest.raises(SweepError, match="tenant 'videos', K=5000"):
        run_sweep(load_sweep({**_sweep("x", ["videos"], 1), "k_users": [5000]}), cfg, base, storage_path=tmp_path)
    with pytest.raises(SweepError, match="text.model"):
        run_sweep(load_sweep(_sweep("x", ["videos"], 1)), cfg.model_copy(update={"text": cfg.text.model_copy(update={"model": "other"})}),
                  base, storage_path=tmp_path)
    assert not (tmp_path / "x").exists()


# --- resume after killing the driver ----------------------------------------------------------
def _terminated(exp_dir: Path) -> set[str]:
    files = sorted(exp_dir.glob("experiment_state-*.json"))
    if not files:
        return set()
    try:
        state = json.loads(files[-1].read_text())
    except (json.JSONDecodeError, OSError):
        return set()  # being replaced right now
    out = set()
    for trial_json, _ in state["trial_data"]:
        t = json.loads(trial_json)
        if t["status"] == "TERMINATED":
            out.add(t["trial_id"])
    return out


def _ours(ray_tmp: str) -> list[psutil.Process]:
    """Processes of the driver's own Ray: they carry its unique RAY_TMPDIR (never anyone else's Ray)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("RAY_TMPDIR") == ray_tmp:
                found.append(p)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def _kill_all(proc: subprocess.Popen, ray_tmp: str) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while (left := _ours(ray_tmp)) and time.time() < deadline:
        for p in left:  # Ray daemons share the driver's fate; anything left is still ours
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.5)
    assert not _ours(ray_tmp), "processes of the killed driver's Ray are still alive"


@pytest.mark.slow
@pytest.mark.integration
def test_killed_driver_resumes_without_rerunning_finished_trials(backbone_dir, tmp_path):
    total = 6
    spec = _sweep("resume", ["videos"], total, scheduler={"type": "fifo"}, max_concurrent_trials=1)
    spec["search_space"].update({"adapt.method": "head", "adapt.epochs": 25, "adapt.patience": 25})
    (tmp_path / "resume.yaml").write_text(json.dumps(spec))
    storage = tmp_path / "tune"
    exp = storage / "resume"
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env.update(RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0", TUNE_GLOBAL_CHECKPOINT_S="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "rec.cli", "tune", "--backbone", str(backbone_dir), "--sweep", str(tmp_path / "resume.yaml"),
           "--storage-path", str(storage), "--verbose", "0", "data.synthetic.tenants=4", "ray.num_cpus=2",
           f"adapt.output_root={tmp_path / 'adapters'}"]
    log = open(tmp_path / "driver1.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while len(_terminated(exp)) < 2:
            assert proc.poll() is None, f"driver exited early: {(tmp_path / 'driver1.log').read_text()[-3000:]}"
            assert time.time() < deadline, "no trial finished in time"
            time.sleep(0.3)
    finally:
        _kill_all(proc, ray_tmp)
    finished = _terminated(exp)
    assert 2 <= len(finished) < total, f"kill came too late: {len(finished)} of {total} trials finished"
    print(f"killed the driver with {len(finished)} of {total} trials finished")
    lines = {t: len((exp / f"trial_{t}" / "result.json").read_text().splitlines()) for t in finished}

    log2 = tmp_path / "driver2.log"
    with open(log2, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=400)
        finally:
            if proc.poll() is None:
                _kill_all(proc, ray_tmp)
    assert not _ours(ray_tmp)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    out = log2.read_text()
    assert rc == 0, out[-3000:]
    assert "(resumed)" in out
    assert len(_terminated(exp)) == total
    trial_dirs = sorted(exp.glob("trial_*"))
    assert len(trial_dirs) == total
    for t, n in lines.items():  # finished trials were not run again
        assert len((exp / f"trial_{t}" / "result.json").read_text().splitlines()) == n, t
    with open(exp / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == total and all(r["status"] == "completed" for r in rows)
    assert list_versions(tmp_path / "adapters", "videos") == [1]


@pytest.mark.slow
def test_a_sweep_over_the_registrys_item_terms_space_publishes_a_floored_adapter(small_backbone, backbone_dir, ray_local, tmp_path):
    """``methods: [item-terms]``: the method's declared space (rec.adaptation.registry) drives the trials."""
    spec = _sweep("item-terms", NEW_TENANTS[:1], 2, methods=["item-terms"])
    spec["search_space"] = {"adapt.lr": {"loguniform": [1.0e-3, 1.0e-2]}, "adapt.epochs": 2, "adapt.patience": 2}
    spec = load_sweep(spec)
    assert spec.search_space["adapt.method"] == "item-terms" and "adapt.item_terms.id_residual" in spec.search_space
    res = run_sweep(spec, _base_cfg(small_backbone, tmp_path), backbone_dir, storage_path=tmp_path / "tune", verbose=0)
    assert len(res.rows) == 2 and res.errors == 0 and all("adapt.item_terms.id_residual" in r for r in res.rows)
    (best,) = res.best
    manifest = json.loads((Path(best["adapter"]) / "manifest.json").read_text())
    assert manifest["method"] == "item-terms" and manifest["popularity_floor"]["chosen"]
    assert "id_residual" in manifest["hyperparameters"]["item_terms"]
    assert best["rerun_val_ndcg"] == pytest.approx(max(r["val_ndcg@10"] for r in res.rows), abs=1e-6)
