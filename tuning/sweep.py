"""The tune recipe: a Ray Tune sweep over adaptation hyper-parameters, per (tenant, K).

setup (backbone, tenants and their item text, loaded once on the driver and shipped to trials
through the object store) -> run (``Tuner``, or ``Tuner.restore`` when the experiment folder
already exists) -> save (results table; each (tenant, K)'s best trial re-run and published as an
adapter whose manifest carries the tune block).

The pieces, one concept each: the trainable (``tuning.trial``), one Optuna study and one ASHA per
(tenant, K) (``tuning.search``, ``tuning.scheduler``: tenants have different NDCG scales), the
best trials' adapters (``tuning.publish``) and the results tables (``tuning.tables``). This module
is the runner that composes them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import FIFOScheduler

from rec.config import RecConfig
from rec.io.artifacts import atomic_write_json
from rec.training.checkpoint import LoadedBackbone, load_backbone
from tuning.publish import publish_best
from tuning.scheduler import PerGroupScheduler
from tuning.search import build_searcher
from tuning.search_spaces import SweepError, SweepSpec, k_label
from tuning.tables import trial_row, write_tables
from tuning.trial import METRIC, MODE, Group, adaptation_trial, federated_trial

__all__ = ["SweepInterrupted", "SweepResult", "run_sweep"]

STATE_FILE = "sweep.json"


class SweepInterrupted(RuntimeError):
    """Tune stopped before every trial finished (e.g. Ctrl-C); re-running the command resumes it."""


@dataclass
class SweepResult:
    experiment_dir: Path
    rows: list[dict[str, Any]]  # one per trial (see ``tuning.tables.trial_row``)
    best: list[dict[str, Any]]  # one per (tenant, K): trial, val NDCG@10, adapter path, test metrics
    resumed: bool
    wall_s: float
    csv_path: Path
    md_path: Path
    errors: int = 0
    missing: list[str] = field(default_factory=list)  # (tenant, K) groups without a successful trial


def _trial_dirname(trial) -> str:  # noqa: ANN001
    return f"trial_{trial.trial_id}"


# --- setup ---------------------------------------------------------------------------------------
def _select(spec: SweepSpec, cfg: RecConfig, base) -> tuple[dict, list[Group]]:  # noqa: ANN001
    """Tenants (by name) and the (tenant, K) groups, checked before any trial starts."""
    from rec.data.splits import k_shot_split
    from rec.training.corpus import load_tenants

    available = {t.name: t for t in load_tenants(cfg.data)}
    if spec.tenants is None:
        names = [n for n in available if n not in base.tenants]
        if not names:
            raise SweepError(f"every configured tenant {sorted(available)} was seen in pretraining: list `tenants:` in the sweep")
    else:
        unknown = [n for n in spec.tenants if n not in available]
        if unknown:
            raise SweepError(f"tenants {unknown} are not in the configured data; available: {sorted(available)}")
        names = list(spec.tenants)
    ks = list(spec.k_users) if spec.k_users is not None else [cfg.adapt.k_users]
    a = cfg.adapt
    for n in names:
        for k in ks:
            try:
                k_shot_split(available[n], k, a.n_first, a.seed, a.num_eval_users, a.eval_fraction)
            except ValueError as e:
                raise SweepError(f"tenant {n!r}, K={k_label(k)}: {e}") from None
    return {n: available[n] for n in names}, [(n, k) for n in names for k in ks]


def _identity(spec: SweepSpec, cfg: RecConfig, base, tenants: dict) -> dict:  # noqa: ANN001
    """What must not change between a run and its resume."""
    return {
        "sweep": spec.model_dump(mode="json"),
        "backbone_checksum": base.checksum,
        "tenants": {n: t.content_hash() for n, t in tenants.items()},
        "base_config": {"adapt": cfg.adapt.model_dump(mode="json"), "eval": cfg.eval.model_dump(mode="json")},
    }


def _check_same(exp_dir: Path, ident: dict) -> None:
    old = json.loads((exp_dir / STATE_FILE).read_text())
    diff = [k for k in ident if old.get(k) != ident[k]]
    if diff:
        raise SweepError(
            f"experiment {exp_dir} exists with a different {', '.join(diff)}: give the sweep another `name:` "
            "(or another ray.storage_path), or delete that folder to start over"
        )


def run_sweep(
    spec: SweepSpec,
    cfg: RecConfig,
    backbone: str | Path | LoadedBackbone,
    storage_path: str | Path | None = None,
    verbose: int = 1,
) -> SweepResult:
    """Run (or resume) the sweep, write the results table and publish each group's best adapter.

    Args:
        spec: The validated sweep file.
        cfg: The base config every trial starts from (data, text, adapt defaults, ray).
        backbone: The pretrained backbone, or its folder (``rec pretrain`` output).
        storage_path: Tune storage root (default ``cfg.ray.storage_path`` or ``runs/tune``); the
            experiment lives in ``<storage_path>/<spec.name>``.
        verbose: Tune's console verbosity (0 = silent).

    Returns:
        A :class:`SweepResult`.

    Raises:
        SweepError: Keys the base config rejects, unknown tenants, K larger than a tenant's pool,
            an existing experiment with the same name but another sweep/backbone/data.
        SweepInterrupted: Tune stopped before all trials finished (re-run to resume).
    """
    from rec.ray_session import ray_session
    from rec.text import encode_items

    t0 = time.perf_counter()
    tree = cfg.model_dump(mode="json")
    errs = spec.check_against(tree)
    if errs:
        raise SweepError("; ".join(errs))
    base = backbone if isinstance(backbone, LoadedBackbone) else load_backbone(backbone)
    if cfg.text.model != base.cfg.text.model:
        raise SweepError(f"text.model={cfg.text.model!r} differs from the backbone's {base.cfg.text.model!r}: drop the override")
    tenants, groups = _select(spec, cfg, base)
    text_embs = {n: encode_items(list(t.items.text), cfg.text) for n, t in tenants.items()}
    storage = Path(storage_path or cfg.ray.storage_path or "runs/tune").resolve()
    exp_dir = storage / spec.name
    ident = _identity(spec, cfg, base, tenants)
    threads = max(1, int(spec.cpus_per_trial))

    with ray_session(cfg.ray):
        if spec.job == "fed":
            if isinstance(backbone, LoadedBackbone):
                raise SweepError("job: fed runs each trial as a `rec fed` process: pass the backbone folder, not a loaded backbone")
            job = tune.with_parameters(federated_trial, backbone_dir=str(Path(backbone).resolve()), base_tree=tree, spec=spec,
                                       threads=threads)
        else:
            job = tune.with_parameters(adaptation_trial, backbone=base, tenants=tenants, text_embs=text_embs,
                                       base_tree=tree, spec=spec, threads=threads)
        trainable = tune.with_resources(job, {"cpu": spec.cpus_per_trial})
        resumed = tune.Tuner.can_restore(str(exp_dir)) and (exp_dir / STATE_FILE).is_file()
        if resumed:
            _check_same(exp_dir, ident)
            tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=False)
        else:
            exp_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(exp_dir / STATE_FILE, ident)
            tuner = _new_tuner(spec, cfg, trainable, groups, storage, verbose)
        grid = tuner.fit()

    expected = len(groups) * spec.num_samples
    done = grid.num_terminated + grid.num_errors
    if done < expected:
        raise SweepInterrupted(f"{done}/{expected} trials finished in {exp_dir}: re-run the same command to resume")
    rows = [trial_row(grid[i], spec, tree) for i in range(len(grid))]
    best, missing = publish_best(rows, groups, spec, cfg, base, tenants, text_embs, tree, exp_dir, threads)
    for r in rows:
        r["best"] = any(b["trial_id"] == r["trial_id"] for b in best)
    csv_path, md_path = write_tables(exp_dir, spec, rows, best)
    return SweepResult(exp_dir, rows, best, resumed, time.perf_counter() - t0, csv_path, md_path,
                       errors=sum(r["status"] == "error" for r in rows), missing=missing)


def _new_tuner(spec: SweepSpec, cfg: RecConfig, trainable, groups: list[Group], storage: Path, verbose: int):  # noqa: ANN001, ANN202
    search_alg, param_space = build_searcher(spec, groups)
    if spec.scheduler.type == "asha":
        s = spec.scheduler
        scheduler = PerGroupScheduler(spec.max_epochs(cfg.adapt.epochs), s.grace_period, s.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    num_samples = spec.num_samples if spec.search == "random" else len(groups) * spec.num_samples
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=spec.max_concurrent_trials,
            trial_dirname_creator=_trial_dirname,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name=spec.name, storage_path=str(storage), verbose=verbose),
    )
