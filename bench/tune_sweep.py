"""Ray Tune at scale on this machine: ``tuning/configs/sweep-200.yaml`` (210 trials) on one new tenant.

Question: does a sweep of >= 200 trials run here, end to end, with the same YAML a cluster would
run (thousands of trials by raising ``num_samples``)? And what does TPE buy over random search at
the same budget?

Steps:

1. **Backbone**: pretrained with ``rec.training.ray_train.pretrain`` (Ray Train, 1 worker, 2 torch
   threads) on synthetic tenants 0-1 with ``configs/quickstart.yaml``'s data and model (d_model 64,
   2 layers, window 30), a few epochs; or ``--backbone PATH`` (a ``rec pretrain`` checkpoint whose
   data is the synthetic default). Reused when it already exists.
2. **Sweep**: ``tuning/configs/sweep-200.yaml`` loaded unchanged (``tenants: null`` = every tenant
   the backbone never saw: with ``data.synthetic.tenants=3`` that is exactly one), 70 trials per K for
   K = 16, 64, 256 -> 210 trials, via ``tuning.sweep.run_sweep`` on a local Ray with
   ``num_cpus=2``: ``cpus_per_trial 0.5`` and ``max_concurrent_trials: null`` -> 4 concurrent trials.
   The best trial per K is re-run and published (the YAML's ``publish`` default).
3. **Baseline**: the same spec with ``search: random`` (the loaded object is overridden, the file
   is not), same budget, same ASHA.

Each search runs in its own process with its own Ray and a private ``RAY_TMPDIR``; its summary is
kept in ``runs/bench-tune/<search>[-seed<N>]/summary.json`` so ``--report-only`` can rebuild the
results. ``--seeds`` repeats both searches with other sampler seeds (the spec's ``seed``; 0 is the
YAML's own): one seed of TPE vs random is an anecdote.

Usage::

    python bench/tune_sweep.py                          # pretrain, TPE then random: 2 x 210 trials
    python bench/tune_sweep.py --searches optuna        # TPE only
    python bench/tune_sweep.py --seeds 1 --backbone runs/bench-tune/backbone/checkpoint   # another seed of both
    python bench/tune_sweep.py --backbone runs/quickstart/checkpoint
    python bench/tune_sweep.py --epochs-choices 10 20   # cheaper trials (trial count unchanged), recorded
    python bench/tune_sweep.py --quick                  # pipeline check: 4 trials per K, epochs {2, 4}
    python bench/tune_sweep.py --report-only            # rebuild tune_sweep.json/.md/.png from summaries
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Before torch is imported anywhere; Ray workers inherit it (see bench/README.md, backbone section).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make `bench`, `rec` and `tuning` importable

from bench._results import RESULTS, markdown_table, peak_rss_mb, write_results  # noqa: E402

SWEEP = ROOT / "tuning" / "configs" / "sweep-200.yaml"
WORK = ROOT / "runs" / "bench-tune"  # gitignored
SEARCHES = ("optuna", "random")
# configs/quickstart.yaml's data and model; one worker with both cores (no DDP needed at this size).
PRETRAIN = {
    "data.synthetic.tenants": 2,
    "data.synthetic.users_per_tenant": 400,
    "data.synthetic.items_per_tenant": 300,
    "data.max_seq_len": 30,
    "model.d_model": 64,
    "model.n_layers": 2,
    "model.n_heads": 2,
    "model.max_len": 30,
    "model.dropout": 0.2,
    "train.batch_size": 128,
    "train.lr": 0.002,
    "train.num_workers": 1,
    "train.cpus_per_worker": 2,
    "train.torch_threads": 2,
    "train.resume": False,
    "train.run_name": "backbone",
    "ray.num_cpus": 2,
}
NEW_TENANTS = 3  # data.synthetic.tenants for the sweep: tenant 2 is the only one the backbone never saw


def log(msg: str) -> None:
    print(f"[tune_sweep {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- children (one Ray each) ---------------------------------------------------------------------
def child_pretrain(args: argparse.Namespace) -> dict[str, Any]:
    from rec.config import load_config
    from rec.ray_session import ray_session
    from rec.training.ray_train import pretrain

    ov = {**PRETRAIN, "train.epochs": args.pretrain_epochs, "train.patience": args.pretrain_epochs,
          "train.output_dir": str(WORK / "backbone")}
    cfg = load_config(None, [f"{k}={v}" for k, v in ov.items()])
    with ray_session(cfg.ray):
        res = pretrain(cfg)
    return {"checkpoint": str(res.checkpoint), "train_s": res.train_s, "epochs": res.epochs,
            "val_ndcg@10": [round(h["val_ndcg@10"], 4) for h in res.history]}


def _storage(search: str, seed: int) -> Path:
    """Tune storage root of one (search, seed); seed 0 (the YAML's) keeps the plain name."""
    return WORK / (search if seed == 0 else f"{search}-seed{seed}")


def _summary_path(search: str, seed: int, quick: bool) -> Path:
    return _storage(search, seed) / f"summary{'-quick' if quick else ''}.json"


def _spec(args: argparse.Namespace, search: str):  # noqa: ANN202
    """sweep-200.yaml as loaded, with the search and seed (and, if asked, epochs / trial count) overridden."""
    from tuning.search_spaces import load_sweep

    spec = load_sweep(SWEEP)
    tree = spec.model_dump(mode="json")
    tree["search"] = search
    tree["seed"] = args.seed
    if args.epochs_choices:
        tree["search_space"]["adapt.epochs"] = {"choice": list(args.epochs_choices)}
    if args.quick:
        tree["num_samples"] = 4
        tree["search_space"]["adapt.epochs"] = {"choice": [2, 4]}
        tree["name"] = f"{tree['name']}-quick"
    return load_sweep(tree)  # validated again


def _trial_timings(exp_dir: Path, trial_id: str) -> dict[str, float]:
    """Start, end (unix s) and trainable time of one trial from Tune's ``result.json``."""
    lines = [json.loads(x) for x in (exp_dir / f"trial_{trial_id}" / "result.json").read_text().splitlines() if x.strip()]
    if not lines:
        return {}
    first, last = lines[0], lines[-1]
    return {"start": first["timestamp"] - first.get("time_this_iter_s", 0.0), "end": last["timestamp"],
            "duration_s": last.get("time_total_s", 0.0)}


def child_sweep(args: argparse.Namespace, search: str) -> dict[str, Any]:
    from bench.backbone import WorkerRssSampler
    from rec.config import apply_overrides, config_from_dict
    from rec.training.checkpoint import load_backbone
    from tuning.sweep import run_sweep

    spec = _spec(args, search)
    base = load_backbone(args.backbone)
    storage = _storage(search, args.seed)
    ov = [f"data.synthetic.tenants={NEW_TENANTS}", "ray.num_cpus=2", f"adapt.output_root={storage / 'adapters'}"]
    cfg = config_from_dict(apply_overrides(base.cfg.model_dump(mode="json"), ov))
    if not args.resume:
        shutil.rmtree(storage / spec.name, ignore_errors=True)
    with WorkerRssSampler() as rss:
        res = run_sweep(spec, cfg, base, storage_path=storage, verbose=args.verbose)
    trials = []
    for r in res.rows:
        t = {"k": r["k"], "trial_id": r["trial_id"], "method": r.get("adapt.method"), "epochs_planned": r.get("adapt.epochs"),
             "epochs": r["epochs"], "val_ndcg@10": r["val_ndcg@10"], "status": r["status"]}
        try:
            t.update(_trial_timings(res.experiment_dir, r["trial_id"]))
        except (OSError, ValueError, KeyError):
            pass
        trials.append(t)
    return {
        "search": search,
        "seed": spec.seed,
        "tenant": res.rows[0]["tenant"] if res.rows else None,
        "spec": spec.model_dump(mode="json"),
        "experiment_dir": str(res.experiment_dir),
        "backbone": str(Path(args.backbone).resolve()),
        "backbone_checksum": base.checksum,
        "resumed": res.resumed,
        "wall_s": res.wall_s,
        "errors": res.errors,
        "missing": res.missing,
        "best": [dict(b) for b in res.best],
        "trials": trials,
        "peak_driver_rss_mb": peak_rss_mb(include_children=False),
        "peak_worker_rss_mb": round(rss.peak_mb, 1),
        "peak_worker_name": rss.peak_name,
        "loadavg_1m_end": os.getloadavg()[0],
    }


def zero_shot(backbone: str) -> dict[str, float]:
    """Validation and test NDCG@10 of the un-adapted backbone on the sweep's tenant and held-out users.

    The held-out users do not depend on K (``k_shot_split`` draws them first), so one evaluation is
    the reference for every K. Cached in ``runs/bench-tune/zero_shot.json`` per backbone checksum.
    """
    from rec.adaptation.adapt import adapt_tenant
    from rec.config import apply_overrides, config_from_dict
    from rec.training.checkpoint import load_backbone
    from rec.training.corpus import load_tenants

    base = load_backbone(backbone)
    cache = WORK / "zero_shot.json"
    if cache.is_file() and (c := json.loads(cache.read_text())).get("backbone_checksum") == base.checksum:
        return c
    cfg = config_from_dict(apply_overrides(base.cfg.model_dump(mode="json"), [f"data.synthetic.tenants={NEW_TENANTS}", "adapt.method=zero-shot"]))
    tenant = next(t for t in load_tenants(cfg.data) if t.name not in base.tenants)
    res = adapt_tenant(base, tenant, cfg.adapt, cfg.eval)
    out = {"backbone_checksum": base.checksum, "tenant": tenant.name, "val_ndcg@10": res.valid["ndcg@10"], "test_ndcg@10": res.test["ndcg@10"]}
    cache.write_text(json.dumps(out))
    return out


def _shown_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A best config without the keys its method ignores (another method's config section, per the registry)."""
    from rec.adaptation.registry import config_owner

    method = cfg.get("adapt.method")
    out = {}
    for k, v in cfg.items():
        owner = config_owner(k)
        k = k.removeprefix("adapt.")
        if k in ("tenant", "k_users") or owner not in (None, method):
            continue
        out[k] = round(v, 6) if isinstance(v, float) else v
    return out


def run_child(argv: list[str], out: Path) -> dict[str, Any]:
    ray_tmp = tempfile.mkdtemp(prefix="rtn", dir="/tmp")  # short: Ray's unix socket paths
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    try:
        subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--child-out", str(out)], cwd=ROOT, env=env, check=True)
        return json.loads(out.read_text())
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


# --- report ------------------------------------------------------------------------------------------
def _k_order(k: str) -> float:
    return float("inf") if k == "all" else float(k)


def summarize(s: dict[str, Any], zs: dict[str, float]) -> list[dict[str, Any]]:
    """One row per K plus an ``all`` row, from a search's summary."""
    import statistics

    trials = s["trials"]
    starts = [t["start"] for t in trials if "start" in t]
    ends = [t["end"] for t in trials if "end" in t]
    tune_s = (max(ends) - min(starts)) if starts and ends else None
    rows = []
    for k in [*sorted({t["k"] for t in trials}, key=_k_order), "all"]:
        ts = [t for t in trials if k == "all" or t["k"] == k]
        ok = [t for t in ts if t["val_ndcg@10"] is not None and t["status"] != "error"]
        best = max(ok, key=lambda t: t["val_ndcg@10"]) if ok else None
        b = next((x for x in s["best"] if x["k"] == k), None)
        rows.append({
            "search": s["search"],
            "seed": s.get("seed", 0),
            "tenant": s["tenant"],
            "k": k,
            "trials": len(ts),
            "completed": sum(t["status"] == "completed" for t in ts),
            "stopped_patience": sum(t["status"] == "early-stopped (patience)" for t in ts),
            "stopped_early": sum(t["status"] == "stopped (ASHA)" for t in ts),
            "errored": sum(t["status"] == "error" for t in ts),
            "epochs_trained": sum(t["epochs"] for t in ts),
            "median_trial_s": round(sorted(t["duration_s"] for t in ts if "duration_s" in t)[len(ts) // 2], 2) if ts and all("duration_s" in t for t in ts) else None,
            "wall_s": round(s["wall_s"], 1),
            "tune_s": round(tune_s, 1) if tune_s else None,
            "trials_per_min": round(len(s["trials"]) / (tune_s / 60), 1) if (k == "all" and tune_s) else None,
            "median_val_ndcg@10": round(statistics.median(t["val_ndcg@10"] for t in ok), 4) if ok else None,
            "best_val_ndcg@10": round(best["val_ndcg@10"], 4) if best else None,
            "best_method": best["method"] if best else None,
            "methods_sampled": "/".join(f"{m} {n}" for m, n in sorted(collections.Counter(t["method"] for t in ts).items())),
            "best_test_ndcg@10": round(b["test"]["ndcg@10"], 4) if b and "test" in b and k != "all" else None,
            "zero_shot_val_ndcg@10": round(zs["val_ndcg@10"], 4),
            "zero_shot_test_ndcg@10": round(zs["test_ndcg@10"], 4),
            "peak_rss_mb": s["peak_driver_rss_mb"],
            "peak_worker_rss_mb": s["peak_worker_rss_mb"],
        })
    return rows


def best_so_far(trials: list[dict[str, Any]]) -> list[float]:
    """Best val NDCG@10 among the first n trials to finish, for n = 1..len (NaN before any result)."""
    best, ys = float("nan"), []
    for t in sorted((t for t in trials if "end" in t), key=lambda t: t["end"]):
        v = t["val_ndcg@10"]
        if v is not None and t["status"] != "error" and not (best >= v):
            best = v
        ys.append(best)
    return ys


def curve_table(summaries: list[dict[str, Any]]) -> str:
    """Mean over seeds of the best-so-far val NDCG@10 after n finished trials, per search and K."""
    import statistics

    ks = sorted({t["k"] for s in summaries for t in s["trials"]}, key=_k_order)
    n_max = max(len([t for t in s["trials"] if t["k"] == k]) for s in summaries for k in ks)
    marks = [n for n in (5, 10, 20, 35, 50, 70) if n <= n_max] or [n_max]
    rows = []
    for search in SEARCHES:
        ss = [s for s in summaries if s["search"] == search]
        for k in ks if ss else []:
            curves = [best_so_far([t for t in s["trials"] if t["k"] == k]) for s in ss]
            row = {"search": search, "k": k, "seeds": len(curves)}
            for n in marks:
                vals = [c[n - 1] for c in curves if len(c) >= n]
                row[f"best@{n}"] = round(statistics.mean(vals), 4) if vals else None
            rows.append(row)
    return ("Best-so-far validation NDCG@10 after n finished trials of one K (mean over seeds; TPE's first "
            "trials are its random start-up):\n\n" + markdown_table(rows))


def plot(summaries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({t["k"] for s in summaries for t in s["trials"]}, key=_k_order)
    fig, axes = plt.subplots(1, len(ks) + 1, figsize=(4.0 * (len(ks) + 1), 3.6))
    colors = {"optuna": "#1f77b4", "random": "#ff7f0e"}
    for ax, k in zip(axes, ks):
        for s in summaries:
            ts = sorted((t for t in s["trials"] if t["k"] == k and "end" in t), key=lambda t: t["end"])
            ys = best_so_far(ts)
            seed = s.get("seed", 0)
            ax.plot(range(1, len(ys) + 1), ys, color=colors.get(s["search"]), linestyle=("-", "--", ":", "-.")[seed % 4],
                    label=f"{s['search']}{' (TPE)' if s['search'] == 'optuna' else ''}, seed {seed}")
            ax.scatter(range(1, len(ts) + 1), [t["val_ndcg@10"] if t["val_ndcg@10"] is not None else float("nan") for t in ts],
                       s=5, alpha=0.25, color=colors.get(s["search"]))
        ax.set_title(f"K={k}: best-so-far val NDCG@10", fontsize=9)
        ax.set_xlabel("trials finished (in finishing order)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    ax = axes[-1]
    for s in summaries:
        d = sorted(t["duration_s"] for t in s["trials"] if "duration_s" in t)
        if d:
            ax.hist(d, bins=30, alpha=0.4, color=colors.get(s["search"]), histtype="stepfilled" if s.get("seed", 0) == 0 else "step",
                    label=f"{s['search']}, seed {s.get('seed', 0)}")
    ax.set_title("trial duration (trainable time)", fontsize=9)
    ax.set_xlabel("seconds", fontsize=8)
    ax.set_ylabel("trials", fontsize=8)
    ax.legend(fontsize=7)
    fig.suptitle("sweep-200.yaml on one unseen synthetic tenant, local Ray num_cpus=2, 4 concurrent trials (dots: single trials)", fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def backbone_note(s: dict[str, Any]) -> str:
    note = f"{s['backbone']} (checksum {s['backbone_checksum'][:12]})"
    info_path = WORK / "backbone" / "pretrain.json"
    if Path(s["backbone"]) == (WORK / "backbone" / "checkpoint").resolve() and info_path.is_file():
        info = json.loads(info_path.read_text())
        model = {k: v for k, v in PRETRAIN.items() if k.startswith(("model.", "data."))}
        note += (f": rec.training.ray_train.pretrain on synthetic tenants 0-1, {json.dumps(model)}, 1 Ray Train worker x 2 "
                 f"threads, {info['epochs']} epochs in {info['train_s']:.0f} s, sources' val NDCG@10 per epoch {info['val_ndcg@10']}")
    return note


def report(args: argparse.Namespace) -> Path:
    name = args.name + ("_quick" if args.quick else "")
    paths = [p for p in sorted(WORK.glob(f"*/summary{'-quick' if args.quick else ''}.json")) if p.parent.name.split("-seed")[0] in SEARCHES]
    summaries = sorted((json.loads(p.read_text()) for p in paths), key=lambda s: (SEARCHES.index(s["search"]), s.get("seed", 0)))
    if not summaries:
        raise SystemExit(f"no summaries under {WORK}: run the benchmark first")
    zs = zero_shot(summaries[0]["backbone"])
    rows = [r for s in summaries for r in summarize(s, zs)]
    spec = summaries[0]["spec"]
    ran = {s["search"] for s in summaries}
    epochs = spec["search_space"]["adapt.epochs"]
    protocol = {
        "question": "does a >= 200-trial Ray Tune sweep (tuning/configs/sweep-200.yaml, the file a cluster runs) run end to end "
                    "on this shared 2-core machine, and what does TPE reach against random search at the same budget",
        "backbone": backbone_note(summaries[0]),
        "tenant": f"{summaries[0]['tenant']}: synthetic tenant 2 of data.synthetic.tenants={NEW_TENANTS} (400 users, 300 items), "
                  "never seen in pretraining; adapt defaults: 20% of users held out (80), K training users from the rest",
        "sweep": f"{SWEEP.relative_to(ROOT)} loaded with tuning.search_spaces.load_sweep; overrides of the loaded object only: "
                 f"search per row{'; adapt.epochs -> ' + json.dumps(epochs) if args.epochs_choices or args.quick else ' (file otherwise unchanged)'}"
                 f"{'; QUICK pipeline check: num_samples 4' if args.quick else ''}. {spec['num_samples']} trials per K x K {spec['k_users']} "
                 f"= {spec['num_samples'] * len(spec['k_users'])} trials per search. Space: {json.dumps(spec['search_space'])}",
        "search": "optuna = one Optuna TPE study per (tenant, K) (PerGroupSearcher; the first max(2, min(10, num_samples // 3)) = "
                  f"{max(2, min(10, spec['num_samples'] // 3))} trials of each study are TPE's random start-up); "
                  "random = Ray Tune BasicVariantGenerator (grid over tenant x K, every other key sampled)",
        "early_stopping": f"ASHA per (tenant, K), time = adaptation epochs, grace {spec['scheduler']['grace_period']}, "
                          f"reduction factor {spec['scheduler']['reduction_factor']}, max_t = largest adapt.epochs; "
                          f"plus adapt_tenant's own patience (adapt.patience {spec['search_space'].get('adapt.patience')})",
        "objective": "validation NDCG@10 (second-last item) of the held-out users, best epoch; test NDCG@10 only for each K's best "
                     "trial re-run and published as an adapter",
        "resources": "local ray.init(num_cpus=2), cpus_per_trial 0.5, max_concurrent_trials null -> 4 concurrent trials, "
                     "1 torch thread each, reuse_actors; the machine is shared with other jobs (loadavg at the end of each search: "
                     + ", ".join(f"{s['search']} seed {s.get('seed', 0)} {s['loadavg_1m_end']:.1f}" for s in summaries)
                     + "): compare trials_per_min between rows with that in mind",
        "columns": "trials = trials run for that K (all = the search); completed = ran all planned epochs; stopped_patience = "
                   "adapt_tenant stopped itself (no val improvement for adapt.patience epochs); stopped_early = stopped by ASHA; "
                   "errored = trial raised; epochs_trained = sum over trials; median_trial_s = median Tune trainable time per trial; "
                   "wall_s = run_sweep end to end (setup, item-text encoding, Ray start, Tune, re-run + publish of the 3 best); "
                   "tune_s = first trial start to last trial end; trials_per_min = trials / tune_s; median_val_ndcg@10 = median over the trials' "
                   "best-epoch validation NDCG@10 (ASHA-stopped trials included); best_method = adapt.method of the best trial; "
                   "methods_sampled = how many trials each method got; best_test_ndcg@10 = test NDCG@10 of the published re-run of that K's best; zero_shot_* = the "
                   "un-adapted backbone on the same held-out users (reference; the same for every K); peak_rss_mb = driver "
                   "process peak RSS; peak_worker_rss_mb = largest single ray:: worker process (sampled every 0.25 s)",
        "seeds": "seed = the spec's sampler seed (TPE samplers get seed + group index; random search's random_state); "
                 "seed 0 is the YAML's. Same backbone, tenant, split and trial budget for every (search, seed); "
                 "trial outcomes also vary with thread timing (4 concurrent trials: which results TPE has seen when it suggests)",
        "baseline": "random search ran with the same budget" if "random" in ran else
                    "random-search baseline NOT run (time budget); run `python bench/tune_sweep.py --searches random` then --report-only",
        "commands": "python bench/tune_sweep.py" + (" --quick" if args.quick else "") + (f" --epochs-choices {' '.join(map(str, args.epochs_choices))}" if args.epochs_choices else ""),
    }
    cols = ["search", "seed", "tenant", "k", "trials", "completed", "stopped_patience", "stopped_early", "errored", "epochs_trained",
            "median_trial_s", "wall_s", "tune_s", "trials_per_min", "median_val_ndcg@10", "best_val_ndcg@10", "best_method", "methods_sampled", "best_test_ndcg@10",
            "zero_shot_val_ndcg@10", "zero_shot_test_ndcg@10", "peak_rss_mb", "peak_worker_rss_mb"]
    notes = [f"![best-so-far val NDCG@10 vs trials]({name}.png)", "", curve_table(summaries), ""]
    for s in summaries:
        notes.append(f"**{s['search']}, seed {s.get('seed', 0)}** best per K (published adapters under `{Path(s['experiment_dir']).parent.relative_to(ROOT) if str(s['experiment_dir']).startswith(str(ROOT)) else s['experiment_dir']}`):")
        for b in s["best"]:
            notes.append(f"- K={b['k']}: trial {b['trial_id']}, val {b['val_ndcg@10']:.4f}, test {b.get('test', {}).get('ndcg@10', float('nan')):.4f}, "
                         f"epochs trained {b['epochs']}, config {json.dumps(_shown_config(b['best_config']))}")
        notes.append("")
    path = write_results(name, protocol, rows, cols, notes="\n".join(notes), results_dir=args.results_dir)
    plot(summaries, args.results_dir / f"{name}.png")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", type=Path, help="an existing backbone checkpoint (synthetic-default data); default: pretrain one")
    p.add_argument("--pretrain-epochs", type=int, default=6)
    p.add_argument("--searches", nargs="+", choices=SEARCHES, default=list(SEARCHES))
    p.add_argument("--epochs-choices", type=int, nargs="+", help="override adapt.epochs choices (cheaper trials; trial count unchanged)")
    p.add_argument("--quick", action="store_true", help="pipeline check: 4 trials per K, epochs {2, 4}; writes <name>_quick")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampler seeds (spec.seed); 0 = the YAML's")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # one child's seed
    p.add_argument("--resume", action="store_true", help="resume existing experiments instead of starting them over")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--verbose", type=int, default=1, help="Tune console verbosity")
    p.add_argument("--name", default="tune_sweep")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _pass_through(args: argparse.Namespace) -> list[str]:
    out = ["--backbone", str(args.backbone), "--seed", str(args.seed), "--verbose", str(args.verbose), "--pretrain-epochs", str(args.pretrain_epochs)]
    if args.epochs_choices:
        out += ["--epochs-choices", *map(str, args.epochs_choices)]
    return out + (["--quick"] if args.quick else []) + (["--resume"] if args.resume else [])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        res = child_pretrain(args) if args.child == "pretrain" else child_sweep(args, args.child)
        args.child_out.write_text(json.dumps(res, default=str))
        return 0
    if args.report_only:
        log(f"wrote {report(args)}")
        return 0
    t0 = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.backbone is None:
        args.backbone = WORK / "backbone" / "checkpoint"
        info_path = WORK / "backbone" / "pretrain.json"
        if not (args.backbone / "manifest.json").is_file():
            log(f"pretraining a backbone ({args.pretrain_epochs} epochs) into {args.backbone}")
            info = run_child(["--child", "pretrain", "--pretrain-epochs", str(args.pretrain_epochs)], WORK / "backbone.child.json")
            info_path.write_text(json.dumps(info))
            log(f"pretrained in {info['train_s']:.0f} s, val NDCG@10 per epoch {info['val_ndcg@10']}")
        else:
            log(f"reusing {args.backbone}")
    elif not (args.backbone / "manifest.json").is_file():
        raise SystemExit(f"--backbone {args.backbone}: no manifest.json there; pass a `rec pretrain` checkpoint folder")
    for seed in args.seeds:
        args.seed = seed
        for search in args.searches:
            run_search(args, search)
    log(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


def run_search(args: argparse.Namespace, search: str) -> None:
    seed = args.seed
    log(f"{search}, seed {seed}: starting ({'quick' if args.quick else 'sweep-200.yaml'})")
    s = run_child(["--child", search, *_pass_through(args)], WORK / f"{search}-seed{seed}.child.json")
    _summary_path(search, seed, args.quick).write_text(json.dumps(s, indent=1))
    log(f"{search}, seed {seed}: {len(s['trials'])} trials, {s['errors']} errors, wall {s['wall_s']:.0f} s, "
        f"best {[(b['k'], round(b['val_ndcg@10'], 4)) for b in s['best']]}")
    log(f"wrote {report(args)}")  # after every search: a partial result survives a later failure


if __name__ == "__main__":
    raise SystemExit(main())
