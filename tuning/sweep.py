"""The tune recipe: a Ray Tune sweep over adaptation hyper-parameters, per (tenant, K).

setup (backbone, tenants and their item text, loaded once on the driver and shipped to trials
through the object store) -> run (``Tuner``, or ``Tuner.restore`` when the experiment folder
already exists) -> save (results table; each (tenant, K)'s best trial re-run and published as an
adapter whose manifest carries the tune block).

Each trial is one :func:`rec.adaptation.adapt.adapt_tenant` call reporting validation NDCG@10 of
the tenant's held-out users after every epoch; ASHA stops poor trials on those reports. Tenants
have different NDCG scales, so every (tenant, K) has its own Optuna study and its own ASHA rungs
(:class:`PerGroupSearcher`, :class:`PerGroupScheduler`) inside one experiment.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, Searcher

from rec.config import RecConfig
from rec.io.artifacts import atomic_write_bytes, atomic_write_json
from rec.training.checkpoint import LoadedBackbone, load_backbone
from tuning.search_spaces import SweepError, SweepSpec, k_label, trial_config, trial_overrides

__all__ = [
    "METRIC",
    "MODE",
    "PerGroupScheduler",
    "PerGroupSearcher",
    "SweepInterrupted",
    "SweepResult",
    "adaptation_trial",
    "run_sweep",
]

METRIC, MODE = "ndcg@10", "max"
STATE_FILE, PUBLISHED_FILE = "sweep.json", "published.json"
Group = tuple[str, "int | None"]


class SweepInterrupted(RuntimeError):
    """Tune stopped before every trial finished (e.g. Ctrl-C); re-running the command resumes it."""


@dataclass
class SweepResult:
    experiment_dir: Path
    rows: list[dict[str, Any]]  # one per trial (see ``_row``)
    best: list[dict[str, Any]]  # one per (tenant, K): trial, val NDCG@10, adapter path, test metrics
    resumed: bool
    wall_s: float
    csv_path: Path
    md_path: Path
    errors: int = 0
    missing: list[str] = field(default_factory=list)  # (tenant, K) groups without a successful trial


# --- the trial ----------------------------------------------------------------------------------
def adaptation_trial(config: dict[str, Any], *, backbone, tenants, text_embs, base_tree, spec, threads) -> None:  # noqa: ANN001
    """Tune function trainable: adapt one tenant with the trial's hyper-parameters.

    ``backbone`` (LoadedBackbone), ``tenants`` ({name: Tenant}) and ``text_embs`` ({name: (N, D)})
    arrive through ``tune.with_parameters`` (one object-store copy per node). Reports the
    validation metrics after every epoch (``epoch`` = epochs trained: ASHA's time attribute),
    tagged with the trial's tenant and K.
    """
    import torch

    from rec.adaptation.adapt import adapt_tenant

    # Ray reuses worker processes and sets OMP threads per task: pin torch explicitly.
    torch.set_num_threads(threads)
    cfg = trial_config(base_tree, spec, config, torch_threads=threads)
    name = config["tenant"]
    tags = {"tenant": name, "k": k_label(config["k_users"])}

    def report(epoch: int, val: dict[str, float]) -> None:
        tune.report({**val, "epoch": epoch + 1, **tags})

    text_emb = np.array(text_embs[name])  # object-store arrays are read-only; torch wants to own a writable one
    res = adapt_tenant(backbone, tenants[name], cfg.adapt, cfg.eval, text_emb=text_emb, on_epoch=report)
    # A closing report at the same epoch count: the metrics of the weights adapt_tenant keeps (best
    # epoch), which Optuna learns from, and ``final`` marks a trial that ended on its own (patience
    # or all epochs), which a trial stopped by ASHA never sends.
    tune.report({**res.valid, "epoch": res.epochs, "final": 1, **tags})


# --- one Optuna study and one ASHA per (tenant, K) ---------------------------------------------
class PerGroupSearcher(Searcher):
    """Routes each trial to the searcher of its (tenant, K); ``num_samples`` trials per group.

    OptunaSearch cannot take ``grid_search``, and one study across tenants would compare NDCG
    values of different catalogs. Groups are filled evenly (the least-sampled group goes next), so
    every tenant makes progress under ``max_concurrent_trials``. Its whole state (the sub-searchers
    included) is pickled by ``save`` so ``Tuner.restore`` continues every study.
    """

    def __init__(self, searchers: dict[Group, Searcher], num_samples: int, metric: str = METRIC, mode: str = MODE) -> None:
        super().__init__(metric=metric, mode=mode)
        self._searchers = dict(searchers)
        self._num_samples = num_samples
        self._issued = {g: 0 for g in searchers}
        self._trial_group: dict[str, Group] = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:  # noqa: ANN001
        return True  # every sub-searcher was built with its space, metric and mode

    def suggest(self, trial_id: str) -> dict | None:
        open_groups = sorted((g for g, n in self._issued.items() if n < self._num_samples), key=lambda g: self._issued[g])
        if not open_groups:
            return Searcher.FINISHED
        for g in open_groups:
            cfg = self._searchers[g].suggest(trial_id)
            if cfg is None or cfg == Searcher.FINISHED:
                continue
            self._issued[g] += 1
            self._trial_group[trial_id] = g
            return {"tenant": g[0], "k_users": g[1], **cfg}
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._trial_group:
            self._searchers[self._trial_group[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._trial_group:
            self._searchers[self._trial_group[trial_id]].on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class PerGroupScheduler(FIFOScheduler):
    """One ASHA per (tenant, K), so rungs never mix catalogs. Time is the reported ``epoch``.

    ``training_iteration`` would count the trial's closing report as an extra epoch; trials that
    survive the last rung are not stopped (``stop_last_trials=False``) so they send that report.

    Tune does not checkpoint schedulers: after ``Tuner.restore`` the trials that had finished are
    replayed into their group's rungs (last result at the highest rung it reached).
    """

    def __init__(self, max_t: int, grace_period: int, reduction_factor: int, metric: str = METRIC, mode: str = MODE) -> None:
        super().__init__()
        self._metric, self._mode = metric, mode
        self._kwargs = dict(time_attr="epoch", metric=metric, mode=mode, max_t=max_t, stop_last_trials=False,
                            grace_period=min(grace_period, max_t), reduction_factor=reduction_factor)
        self._subs: dict[Group, ASHAScheduler] = {}

    def _sub(self, trial) -> ASHAScheduler:  # noqa: ANN001
        g = (trial.config["tenant"], trial.config["k_users"])
        if g not in self._subs:
            self._subs[g] = ASHAScheduler(**self._kwargs)
        return self._subs[g]

    def set_search_properties(self, metric, mode, **spec) -> bool:  # noqa: ANN001
        return True

    def on_trial_add(self, tune_controller, trial) -> None:  # noqa: ANN001
        sub = self._sub(trial)
        sub.on_trial_add(tune_controller, trial)
        if trial.status == trial.TERMINATED and trial.last_result:
            sub.on_trial_complete(tune_controller, trial, trial.last_result)

    def on_trial_result(self, tune_controller, trial, result) -> str:  # noqa: ANN001
        return self._sub(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result) -> None:  # noqa: ANN001
        if trial.trial_id in self._sub(trial)._trial_info:
            self._sub(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:  # noqa: ANN001
        self._sub(trial)._trial_info.pop(trial.trial_id, None)

    def on_trial_error(self, tune_controller, trial) -> None:  # noqa: ANN001
        self._sub(trial)._trial_info.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        stopped = sum(s._num_stopped for s in self._subs.values())
        return f"ASHA per (tenant, K): {len(self._subs)} groups, {stopped} trials stopped early"


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


def _searcher(spec: SweepSpec, groups: list[Group]):  # noqa: ANN202
    if spec.search == "random":
        return BasicVariantGenerator(random_state=spec.seed), {
            "tenant": tune.grid_search(list(dict.fromkeys(g[0] for g in groups))),
            "k_users": tune.grid_search(list(dict.fromkeys(g[1] for g in groups))),
            **spec.tune_space(),
        }
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    space = spec.tune_space()
    fixed = {k: v for k, v in space.items() if not hasattr(v, "sample")}
    domains = OptunaSearch.convert_search_space({k: v for k, v in space.items() if hasattr(v, "sample")})
    subs = {}
    for i, g in enumerate(groups):
        # TPE starts after a few random trials; Optuna's default of 10 would be all of a small sweep.
        sampler = optuna.samplers.TPESampler(seed=spec.seed + i, n_startup_trials=max(2, min(10, spec.num_samples // 3)))
        subs[g] = _Fixed(OptunaSearch(space=domains, metric=METRIC, mode=MODE, sampler=sampler), fixed) if domains else _Constant(fixed)
    return PerGroupSearcher(subs, spec.num_samples), {}


class _Fixed(Searcher):
    """A searcher plus keys fixed by the sweep file (Optuna cannot take constants)."""

    def __init__(self, inner: Searcher, fixed: dict[str, Any]) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.inner, self.fixed = inner, fixed

    def suggest(self, trial_id: str) -> dict | None:
        cfg = self.inner.suggest(trial_id)
        return cfg if cfg is None or cfg == Searcher.FINISHED else {**self.fixed, **cfg}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.inner.on_trial_complete(trial_id, result, error)


class _Constant(Searcher):
    """Every trial gets the same fixed keys (a sweep over tenants and K only)."""

    def __init__(self, fixed: dict[str, Any]) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.fixed = fixed

    def suggest(self, trial_id: str) -> dict:
        return dict(self.fixed)


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
        trainable = tune.with_resources(
            tune.with_parameters(adaptation_trial, backbone=base, tenants=tenants, text_embs=text_embs,
                                 base_tree=tree, spec=spec, threads=threads),
            {"cpu": spec.cpus_per_trial},
        )
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
    rows = [_row(grid[i], spec, tree) for i in range(len(grid))]
    best, missing = _publish_best(rows, groups, spec, cfg, base, tenants, text_embs, tree, exp_dir, threads)
    for r in rows:
        r["best"] = any(b["trial_id"] == r["trial_id"] for b in best)
    csv_path, md_path = _write_tables(exp_dir, spec, rows, best)
    return SweepResult(exp_dir, rows, best, resumed, time.perf_counter() - t0, csv_path, md_path,
                       errors=sum(r["status"] == "error" for r in rows), missing=missing)


def _new_tuner(spec: SweepSpec, cfg: RecConfig, trainable, groups: list[Group], storage: Path, verbose: int):  # noqa: ANN001, ANN202
    search_alg, param_space = _searcher(spec, groups)
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


# --- results -------------------------------------------------------------------------------------
def _row(result, spec: SweepSpec, tree: dict) -> dict[str, Any]:  # noqa: ANN001
    """One results-table row: tenant, k, trial id, every swept key, best val NDCG@10, epochs, status."""
    config, m = result.config, result.metrics or {}
    trial_id = m.get("trial_id") or Path(result.path).name.removeprefix("trial_")
    over = trial_overrides(spec, config)
    row: dict[str, Any] = {"tenant": config["tenant"], "k": k_label(config["k_users"]), "k_users": config["k_users"], "trial_id": trial_id}
    row.update({p.key: over[p.key] for p in spec.swept()})
    df = result.metrics_dataframe
    row["val_ndcg@10"] = float(df[METRIC].max()) if df is not None and METRIC in df and len(df) else None
    row["epochs"] = int(m.get("epoch", 0))
    if result.error is not None:
        row["status"] = "error"
    elif row["val_ndcg@10"] is None:
        row["status"] = "no result"
    else:
        planned = trial_config(tree, spec, config).adapt.epochs
        if row["epochs"] >= planned or (m.get("final") and row["epochs"] == 0):
            row["status"] = "completed"
        elif m.get("final"):
            row["status"] = "early-stopped (patience)"
        else:
            row["status"] = "stopped (ASHA)"
    row["best"] = False
    row["_config"] = config
    return row


def _publish_best(rows, groups, spec, cfg, base, tenants, text_embs, tree, exp_dir, threads):  # noqa: ANN001, ANN202
    """Re-run each group's best trial (same config, its epoch count) and publish it as an adapter.

    Re-running on the driver keeps trials free of side effects (ASHA-stopped trials leave nothing
    behind) and works without a shared filesystem. Groups already published for the same trial
    (a resumed or repeated command) are not published twice.
    """
    from rec.adaptation.adapt import adapt_tenant, publish_adapter

    published_path = exp_dir / PUBLISHED_FILE
    published = json.loads(published_path.read_text()) if published_path.is_file() else {}
    root = Path(cfg.adapt.output_root).resolve()
    best_rows, missing = [], []
    for tenant, k in groups:
        ok = [r for r in rows if r["tenant"] == tenant and r["k_users"] == k and r["val_ndcg@10"] is not None and r["status"] != "error"]
        if not ok:
            missing.append(f"{tenant}/K={k_label(k)}")
            continue
        r = max(ok, key=lambda r: (r["val_ndcg@10"], r["trial_id"]))  # ties: the same pick after a resume
        key = f"{tenant}/{k_label(k)}"
        entry = {"tenant": tenant, "k": k_label(k), "trial_id": r["trial_id"], "val_ndcg@10": r["val_ndcg@10"],
                 "epochs": r["epochs"], "best_config": trial_overrides(spec, r["_config"])}
        prev = published.get(key)
        if not spec.publish:
            best_rows.append(entry)
            continue
        if prev and prev["trial_id"] == r["trial_id"] and (Path(prev["adapter"]) / "manifest.json").is_file():
            best_rows.append(prev)
            continue
        tcfg = trial_config(tree, spec, r["_config"], torch_threads=threads)
        acfg = tcfg.adapt.model_copy(update={"epochs": max(1, r["epochs"])}) if r["epochs"] else tcfg.adapt
        res = adapt_tenant(base, tenants[tenant], acfg, tcfg.eval, text_emb=text_embs[tenant])
        tune_block = {"experiment": str(exp_dir), "name": spec.name, "trial_id": r["trial_id"],
                      "best_config": entry["best_config"], "val_ndcg@10": r["val_ndcg@10"],
                      "search": spec.search, "scheduler": spec.scheduler.type,
                      "trials_in_group": len([x for x in rows if x["tenant"] == tenant and x["k_users"] == k])}
        path = publish_adapter(res, base, acfg, root=root, extra={"tune": tune_block})
        entry.update(adapter=str(path), rerun_val_ndcg=res.valid["ndcg@10"], test={m: float(v) for m, v in res.test.items()})
        published[key] = entry
        atomic_write_json(published_path, published)
        best_rows.append(entry)
    return best_rows, missing


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    return "" if v is None else str(v)


def _write_tables(exp_dir: Path, spec: SweepSpec, rows: list[dict], best: list[dict]) -> tuple[Path, Path]:
    cols = ["tenant", "k", "trial_id", *[p.key for p in spec.swept()], "val_ndcg@10", "epochs", "status", "best"]
    rows = sorted(rows, key=lambda r: (r["tenant"], r["k"], -(r["val_ndcg@10"] if r["val_ndcg@10"] is not None else np.inf)))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for r in rows:
        w.writerow([_fmt(r[c]) if not isinstance(r[c], float) else repr(r[c]) for c in cols])
    csv_path, md_path = exp_dir / "results.csv", exp_dir / "results.md"
    atomic_write_bytes(csv_path, buf.getvalue().encode())
    md = [f"# Sweep `{spec.name}`", "",
          f"{len(rows)} trials; search `{spec.search}`, scheduler `{spec.scheduler.type}`; objective: validation "
          "NDCG@10 of each tenant's held-out users (best epoch).", "", "## Best per (tenant, K)", "",
          "| tenant | k | trial | val ndcg@10 | test ndcg@10 | adapter |", "|---|---|---|---|---|---|"]
    for b in best:
        md.append(f"| {b['tenant']} | {b['k']} | {b['trial_id']} | {b['val_ndcg@10']:.4f} | "
                  f"{_fmt(b.get('test', {}).get('ndcg@10'))} | {b.get('adapter', '')} |")
    md += ["", "## All trials", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(_fmt(r[c]) if c != "best" else ("✓" if r[c] else "") for c in cols) + " |" for r in rows]
    atomic_write_bytes(md_path, ("\n".join(md) + "\n").encode())
    return csv_path, md_path
