"""Backbone benchmark (issue 2): popularity vs ID-only SASRec vs our text+ID backbone.

Three datasets (ML-1M, Amazon-2014 Beauty, Amazon Scientific), three models each, one run:

    popularity    rank every item by its count in the training sequences
    sasrec-id     the backbone with ID embeddings only (model.use_text=false): SASRec with
                  full-softmax cross-entropy (SASRec+, Klenitskiy & Vasilev, RecSys 2023)
    fewshot-rec   our backbone: MiniLM item text through the adaptor + ID embeddings

Protocol: leave-one-out by time (last item = test, second-last = validation), full ranking over
the tenant's whole catalog, history NOT excluded (the issue's protocol and RecBole's for sequential
models, behind VQ-Rec's numbers); every row also carries ``*_hist_excl`` test metrics with each
user's whole earlier history excluded, the protocol of SASRec+'s published numbers (its code's
``filter_seen: True``). The neural models train through the real
``pretrain()`` Ray Train path (1 worker, 2 torch threads) with early stopping on validation
NDCG@10 measured on a seeded sample of users; test metrics are over ALL evaluable users.

Usage::

    python bench/backbone.py                                  # full benchmark, ~60 min on 2 cores
    python bench/backbone.py --datasets beauty --models popularity sasrec-id
    python bench/backbone.py --quick                          # smoke check (scientific), < 2 min
    python bench/backbone.py --report-only                    # rebuild .md/.png from the saved JSON
    python bench/backbone.py --rescore --datasets beauty      # add *_hist_excl to saved rows from their checkpoints
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# Must precede the torch import, and Ray workers inherit it from this driver: on a shared 2-core
# machine, OpenMP's default spin-waiting made 2 torch threads ~5x slower than 1 (measured, see
# bench/README.md); passive waiting removes that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make `bench` and `rec` importable

from bench._results import RESULTS, log, write_results  # noqa: E402
from rec.config import DATA_ROOT_ENV, RayConfig, RecConfig, TenantSource, load_config  # noqa: E402
from rec.data.schema import Tenant  # noqa: E402
from rec.io.artifacts import atomic_write_bytes  # noqa: E402
from rec.data.splits import leave_one_out  # noqa: E402
from rec.metrics import popularity_metrics  # noqa: E402
from rec.training.corpus import Corpus, EvalRows, build_corpus  # noqa: E402

MODELS = ("popularity", "sasrec-id", "fewshot-rec")
PROTOCOL = (
    "leave-one-out by time (last item = test, second-last = validation, the rest = training); "
    "full ranking over each dataset's whole catalog; history NOT excluded (the *_hist_excl keys: test metrics "
    "with each user's whole earlier history excluded, as SASRec+'s filter_seen); ties optimistic; "
    "test metrics over ALL evaluable users (>= 3 interactions), validation (early stopping on "
    "NDCG@10) over a seeded sample of users"
)


@dataclass(frozen=True)
class DatasetSpec:
    """One benchmark dataset and its training setting (identical for both neural models)."""

    name: str
    source: TenantSource
    setting: dict[str, Any]  # dotted RecConfig overrides


# Why these values: see bench/README.md ("Backbone benchmark"). Shared by sasrec-id and fewshot-rec.
_COMMON = {
    "data.max_seq_len": 50,
    "model.max_len": 50,
    "model.d_model": 64,
    "model.n_layers": 2,
    "model.n_heads": 2,
    "model.dropout": 0.2,
    "train.lr": 2e-3,
    "train.batch_size": 128,
    "train.max_eval_users": 2000,
    # Halve the rate after 3 epochs without a validation gain (2026-12-05: ML-1M ID-only sat at
    # 0.108-0.109 for 16 epochs at a constant 2e-3); patience 10 leaves room for 3 decays.
    "train.lr_decay": 0.5,
    "train.lr_decay_patience": 2,
}
DATASETS = {
    "ml-1m": DatasetSpec(
        "ml-1m",
        TenantSource(format="movielens-1m-tsv", path="ml-1m", name="ml-1m"),
        # SASRec's published ML-1M setting: window 200 (SASRec+ reports NDCG@10 0.1857 there). Patience
        # 10 on every dataset, as SASRec+'s config: with 5, validation noise on 2,000 users stopped
        # ML-1M's still-rising curve at epoch 30.
        {**_COMMON, "data.max_seq_len": 200, "model.max_len": 200, "train.epochs": 200, "train.patience": 10},
    ),
    "beauty": DatasetSpec(
        "beauty",
        TenantSource(format="seqrec", path="seqrec-benchmark/amazon2014-beauty", name="beauty"),
        {**_COMMON, "train.epochs": 100, "train.patience": 10},
    ),
    "scientific": DatasetSpec(
        "scientific",
        TenantSource(format="unisrec", path="amazon-scientific-unisrec", name="scientific"),
        {**_COMMON, "train.epochs": 100, "train.patience": 10},
    ),
}
QUICK = {"train.epochs": 1, "train.max_eval_users": 200, "data.max_seq_len": 20, "model.max_len": 20}
QUICK_USERS = 500
MODEL_SWITCHES = {
    "sasrec-id": {"model.use_text": False, "model.use_id_embedding": True},
    "fewshot-rec": {"model.use_text": True, "model.use_id_embedding": True},
}


# --- setup ----------------------------------------------------------------------------------------
def run_config(spec: DatasetSpec, model: str, args: argparse.Namespace) -> RecConfig:
    """The RecConfig of one (dataset, model) run; ``max_eval_users`` applies to validation only."""
    setting = {**spec.setting, **(QUICK if args.quick else {})}
    if args.epochs is not None:
        setting["train.epochs"] = args.epochs
    setting.update(MODEL_SWITCHES.get(model, MODEL_SWITCHES["sasrec-id"]))
    setting.update(dict(kv.split("=", 1) for kv in args.set))  # --set: this run's overrides, YAML values
    setting.update({
        "train.max_eval_users": None,  # the corpus holds all users; validation is sampled in `sample_validation`
        "train.num_workers": 1,
        "train.torch_threads": 2,
        "train.resume": args.resume,
        "train.output_dir": str(args.runs_dir / f"{spec.name}-{model}"),
        "train.run_name": f"{spec.name}-{model}",
        "text.num_threads": 2,
        "text.cache_dir": str(ROOT / ".cache" / "rec-text"),
        "eval.ks": [10],
    })
    return load_config(None, [f"{k}={_yaml(v)}" for k, v in setting.items()])


def _yaml(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def val_users(spec: DatasetSpec, args: argparse.Namespace) -> int | None:
    return (QUICK if args.quick else spec.setting).get("train.max_eval_users")


def sample_validation(corpus: Corpus, tenant: Tenant, max_users: int | None, seed: int) -> Corpus:
    """Restrict each tenant's validation rows to the library's seeded user sample; test keeps all."""
    idx = leave_one_out(tenant).sample_indices(max_users, seed)
    out = []
    for tc in corpus.tenants:
        out.append(replace(tc, valid=tc.valid.take(idx)))
    return replace(corpus, tenants=out)


# --- the published protocol: history excluded ------------------------------------------------------
#: Row keys measured with every earlier item of the user removed from the ranking, the protocol of
#: SASRec+'s published numbers (``filter_seen: True`` in its SASRec.yaml, applied in validation and
#: test). RecBole, behind VQ-Rec's numbers, masks history only for non-sequential models, so those
#: compare with the history-kept keys.
HIST_EXCL_KEYS = ("hr@10", "ndcg@10", "ndcg@20", "recall@20")


def rank_both_ways(score_batches: Any, rows: EvalRows, history: list[np.ndarray], num_items: int) -> tuple[dict, dict]:
    """Metrics over ``rows`` from ``(slice, (b, N) scores)`` batches: ``(history kept, extra)``;
    ``extra`` holds the ``*_hist_excl`` keys and the standard error of NDCG@10 over users under
    both protocols (``ndcg@10_se``, ``ndcg@10_hist_excl_se``: is a gap to a reference noise?)."""
    from rec.metrics import metrics_from_ranks, rank_of_target

    kept, excl = [], []
    for sl, sc in score_batches:
        kept.append(rank_of_target(sc, rows.targets[sl]))
        excl.append(rank_of_target(sc, rows.targets[sl], exclude=history[sl]))
    kept, excl = np.concatenate(kept), np.concatenate(excl)
    m_kept, m_excl = (metrics_from_ranks(r, ks=[10, 20], num_items=num_items) for r in (kept, excl))
    extra = {f"{k}_hist_excl": m_excl[k] for k in HIST_EXCL_KEYS}
    extra.update({"ndcg@10_se": _ndcg10_se(kept), "ndcg@10_hist_excl_se": _ndcg10_se(excl)})
    return m_kept, extra


def _ndcg10_se(ranks: np.ndarray) -> float:
    per_user = np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(per_user.std(ddof=1) / np.sqrt(len(per_user)))


def popularity_batches(counts: np.ndarray, n: int, batch: int = 1024) -> Any:
    scores = np.asarray(counts, np.float64)
    for s in range(0, n, batch):
        yield slice(s, min(s + batch, n)), np.broadcast_to(scores, (min(batch, n - s), len(scores)))


def model_batches(checkpoint: Path, tc: Any, rows: EvalRows) -> Any:
    """Full-catalog scores of a published backbone over ``rows`` (the text matrix as trained)."""
    import torch

    from rec.training.checkpoint import load_backbone
    from rec.training.loop import tenant_scores

    loaded = load_backbone(checkpoint)
    tc = replace(tc, id_offset=int(loaded.tenants[tc.name]["id_offset"]))
    emb = None if not loaded.cfg.model.use_text else torch.from_numpy(tc.text_emb)
    for sl, sc in tenant_scores(loaded.model, tc, emb, rows.histories, 256):
        yield sl, sc.cpu().numpy()


def without_text(corpus: Corpus) -> Corpus:
    """The same splits for an ID-only model (no text embeddings shipped to the workers)."""
    return replace(corpus, tenants=[replace(t, text_emb=None) for t in corpus.tenants], text_model=None)


# --- measurement ----------------------------------------------------------------------------------
class WorkerRssSampler:
    """Peak RSS of the Ray worker processes this driver started (``ray::*``), sampled every 0.25 s.

    Ray Train runs the training loop in a worker actor process (a descendant of this driver via
    the raylet). We take, over the run, the largest RSS of any single ``ray::`` process: that is
    the training worker (the Train controller and idle workers are far smaller).
    """

    def __init__(self, interval_s: float = 0.25) -> None:
        import psutil

        self._psutil, self.interval_s = psutil, interval_s
        self.peak_mb, self.peak_name = 0.0, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        ps = self._psutil
        for p in ps.Process(os.getpid()).children(recursive=True):
            try:
                name = p.name()
                if not name.startswith("ray::"):
                    cmd = p.cmdline()
                    name = cmd[0] if cmd else name
                if not name.startswith("ray::") or "IDLE" in name:
                    continue
                mb = p.memory_info().rss / 2**20
            except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess):
                continue
            if mb > self.peak_mb:
                self.peak_mb, self.peak_name = mb, name

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> WorkerRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def row(dataset: str, model: str, m: dict[str, float], epochs: int, train_s: float, rss: float) -> dict[str, Any]:
    return {
        "dataset": dataset, "model": model, "hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"], "mrr@10": m["mrr@10"],
        # issue 16: @20 and full-ranking AUC in every row (the library's evaluation reports them)
        "ndcg@20": m.get("ndcg@20"), "recall@20": m.get("recall@20"), "auc": m.get("auc"),
        "epochs": epochs, "train_s": round(train_s, 1), "peak_rss_mb": round(rss, 1),
    }


# --- the run --------------------------------------------------------------------------------------
def bench_dataset(spec: DatasetSpec, models: list[str], args: argparse.Namespace) -> tuple[list[dict], dict]:
    """All requested models on one dataset; returns rows and learning curves."""
    import psutil

    from rec.data.loaders import load_source
    from rec.data.paths import data_root
    from rec.training.ray_train import pretrain

    src = spec.source.model_copy(update={"max_users": QUICK_USERS} if args.quick else {})
    t0 = time.perf_counter()
    tenant = load_source(src, min_seq_len=3, root=data_root(None, os.environ.get(DATA_ROOT_ENV)))  # paths: under the data root
    text_cfg = run_config(spec, "fewshot-rec" if "fewshot-rec" in models else "sasrec-id", args)
    corpus = build_corpus(text_cfg, tenants=[tenant])
    corpus = sample_validation(corpus, tenant, val_users(spec, args), text_cfg.train.seed)
    tc = corpus.tenants[0]
    log(f"{spec.name}: {tenant.num_users} users, {tenant.num_items} items, {len(tc.train_inputs)} train rows, "
        f"{len(tc.valid.targets)} val / {len(tc.test.targets)} test users; corpus in {time.perf_counter() - t0:.1f} s")
    rows, curves = [], {}
    history = tc.test.seen_items(slice(None))  # each user's whole history, not only the window
    for model in models:
        if model == "popularity":
            t1 = time.perf_counter()
            m, extra = rank_both_ways(popularity_batches(tc.item_popularity, len(tc.test.targets)), tc.test, history, tc.num_items)
            pop_s = time.perf_counter() - t1
            curves[model] = popularity_metrics(tc.item_popularity, tc.valid.targets)["ndcg@10"]
            rows.append({**row(spec.name, model, m, 0, pop_s, psutil.Process().memory_info().rss / 2**20), **extra})
        else:
            cfg = run_config(spec, model, args)
            run_corpus = corpus if cfg.model.use_text else without_text(corpus)
            with WorkerRssSampler() as rss:
                res = pretrain(cfg, corpus=run_corpus)
            m = res.test_metrics[tc.name]
            curves[model] = [(int(h["epoch"]), float(h["val_ndcg@10"])) for h in res.history]
            rows.append(row(spec.name, model, m, res.epochs, res.train_s, rss.peak_mb))
            epoch_s = [float(h["epoch_train_s"]) for h in res.history]
            log(f"  peak RSS {rss.peak_mb:.0f} MiB in {rss.peak_name!r}; epoch train s "
                + " ".join(f"{s:.0f}" for s in epoch_s) + "; val ndcg@10 " + " ".join(f"{n:.4f}" for _, n in curves[model]))
            batches = model_batches(Path(cfg.train.output_dir) / "checkpoint", tc, tc.test)
            rows[-1].update(rank_both_ways(batches, tc.test, history, tc.num_items)[1])
        log(f"  {spec.name:<10} {model:<12} " + " ".join(f"{k}={v}" for k, v in rows[-1].items() if k not in ("dataset", "model")))
    return rows, curves


def rescore_saved(args: argparse.Namespace, name: str) -> list[dict]:
    """Add the ``*_hist_excl`` keys to the saved rows of ``args.datasets`` from their published
    checkpoints, without training. Each checkpoint must reproduce its row's NDCG@10 first (the row
    and the checkpoint are the same run), else the row is left as it was and the mismatch said."""
    from rec.data.loaders import load_source
    from rec.data.paths import data_root

    saved, _ = load_saved(args.results_dir, name)
    for d in args.datasets:
        spec = DATASETS[d]
        tenant = load_source(spec.source, min_seq_len=3, root=data_root(None, os.environ.get(DATA_ROOT_ENV)))
        tc = build_corpus(run_config(spec, "fewshot-rec", args), tenants=[tenant]).tenants[0]
        history = tc.test.seen_items(slice(None))  # each user's whole history, not only the window
        for r in (r for r in saved["rows"] if r["dataset"] == d):
            if r["model"] == "popularity":
                batches = popularity_batches(tc.item_popularity, len(tc.test.targets))
            else:
                batches = model_batches(args.runs_dir / f"{d}-{r['model']}" / "checkpoint", tc, tc.test)
            kept, excl = rank_both_ways(batches, tc.test, history, tc.num_items)
            if abs(kept["ndcg@10"] - r["ndcg@10"]) > 5e-4:
                log(f"  {d} {r['model']}: the checkpoint gives NDCG@10 {kept['ndcg@10']:.4f}, the row {r['ndcg@10']:.4f}: "
                    "not the row's run, left as it was")
                continue
            r.update(excl)
            r.update({k: kept[k] for k in ("ndcg@20", "recall@20", "auc") if r.get(k) is None})  # rows from before issue 16's keys
            log(f"  {d:<10} {r['model']:<12} ndcg@10 {r['ndcg@10']:.4f} kept, {excl['ndcg@10_hist_excl']:.4f} history excluded")
    return saved


MODEL_COLORS = {"sasrec-id": "C0", "fewshot-rec": "C1"}  # the same colour in every panel, whatever order runs saved them


def plot_curves(curves: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
    for ax, (dataset, per_model) in zip(axes[0], curves.items()):
        for model, curve in per_model.items():
            if isinstance(curve, float):
                ax.axhline(curve, ls="--", color="grey", label=f"{model} ({curve:.4f})")
            elif curve:
                ep, nd = zip(*curve)
                ax.plot(np.asarray(ep) + 1, nd, marker="o", ms=3, label=model, color=MODEL_COLORS.get(model))
        ax.set(title=dataset, xlabel="epoch", ylabel="val NDCG@10 (full ranking)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


REFERENCES = """\
Reference points (published, full ranking, leave-one-out; not re-run here):

| dataset | model | HR@10 / R@10 | NDCG@10 | source |
|---|---|---|---|---|
| ml-1m | SASRec+ (CE loss, max_len 200) | 0.3159 | 0.1857 | Klenitskiy & Vasilev, RecSys 2023 |
| ml-1m | BERT4Rec | 0.2843 | 0.1537 | same paper |
| ml-1m | gSASRec | 0.3003 | 0.1726 | Petrov & Macdonald, RecSys 2023 |
| scientific | VQ-Rec | 0.1238 | 0.0645 | Hou et al., WWW 2023 |
| scientific | Recformer | 0.1448 | 0.1027 | Li et al., KDD 2023 |

SASRec+'s numbers exclude each user's history from the ranking (`filter_seen: True` in its code);
VQ-Rec's come from RecBole, which keeps it for sequential models."""


def protocol_dict(args: argparse.Namespace, datasets: list[str], wall_s: float) -> dict[str, Any]:
    settings = {d: {**DATASETS[d].setting, **(QUICK if args.quick else {})} for d in datasets}
    if args.set:  # per model, so a later run of the dataset's other models keeps this note
        for d in datasets:
            settings[d].update({f"{m} --set": args.set for m in args.models if m != "popularity"})
    return {
        "protocol": PROTOCOL,
        "models": "popularity = training-sequence item counts; sasrec-id = backbone with model.use_text=false "
                  "model.use_id_embedding=true (SASRec, full-softmax CE); fewshot-rec = MiniLM text adaptor + ID embeddings",
        "training": "rec.training.ray_train.pretrain inside ray_session(RayConfig(num_cpus=2)), 1 worker, "
                    "torch_threads=2, AdamW, early stopping on validation NDCG@10 (train.patience), best epoch restored",
        "setting (identical for sasrec-id and fewshot-rec)": settings,
        "train_s": "wall time of the Ray Train fit (worker start, epochs, per-epoch validation + checkpoint); "
                   "excludes data loading, text encoding and the final test evaluation. popularity: counting + ranking time",
        "peak_rss_mb": "max RSS of any single ray:: worker process of this run (the training worker), sampled every "
                       "0.25 s with psutil from the driver; popularity: driver RSS",
        "quick": bool(args.quick),
        "total_wall_s": round(wall_s, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=None,
                   help="default: all three (only scientific with --quick)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--quick", action="store_true", help=f"smoke check: {QUICK_USERS} users, 1 epoch, window 20 (< 2 min)")
    p.add_argument("--epochs", type=int, default=None, help="override the epoch cap (e.g. 1 to probe epoch time)")
    p.add_argument("--name", default=None, help="results name (default: backbone, or backbone-quick with --quick)")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild <name>.md/.json/_learning_curves.png from the saved <name>.json and _curves.json")
    p.add_argument("--merge", action="store_true",
                   help="keep the saved rows, curves and settings of datasets this run does not cover "
                        "(one results file for all datasets, run one dataset at a time)")
    p.add_argument("--resume", action="store_true",
                   help="continue each (dataset, model) run from its last per-epoch checkpoint under --runs-dir "
                        "(ML-1M at window 200 takes hours here: stop it any time and resume; train_s then covers "
                        "only the resumed part, the learning curve all epochs)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a RecConfig override for this run's neural models (repeatable, recorded in the protocol), "
                        "e.g. train.patience=20 to continue an early-stopped run under --resume")
    p.add_argument("--rescore", action="store_true",
                   help="no training: add the history-excluded test metrics to the saved rows of --datasets "
                        "from their checkpoints under --runs-dir, then rewrite the report")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="per-run checkpoints (default runs/bench-backbone, runs/bench-backbone-quick with --quick: "
                        "a smoke run must not replace the checkpoints behind the saved rows)")
    args = p.parse_args(argv)
    for kv in args.set:
        if "=" not in kv or not kv.split("=", 1)[0]:
            p.error(f"--set {kv!r}: write KEY=VALUE, e.g. --set train.patience=20")
    if args.runs_dir is None:
        args.runs_dir = ROOT / "runs" / ("bench-backbone-quick" if args.quick else "bench-backbone")
    return args


def target_checks(rows: list[dict[str, Any]]) -> str:
    """The issue-16 targets, checked against this run's rows (only those the run covers), under the
    issue's protocol (history kept) and the published references' own (history excluded)."""
    m = {(r["dataset"], r["model"]): r for r in rows}
    lines = ["Targets (checked automatically against this run; `kept` = history kept in the ranking, the issue's "
             "protocol and that of VQ-Rec's RecBole numbers (RecBole masks history only for non-sequential models); "
             "`excl` = every earlier item of the user excluded, the protocol of SASRec+'s published numbers "
             "(`filter_seen: True` in its code)):", ""]
    for d in dict.fromkeys(r["dataset"] for r in rows):
        a, b = m.get((d, "fewshot-rec")), m.get((d, "sasrec-id"))
        if a and b:  # issue 16: text+ID above ID-only on Amazon; on ML-1M within 3 % of it or above
            floor = 0.97 if d == "ml-1m" else 1.0
            lines.append(f"- {d}: fewshot-rec vs sasrec-id NDCG@10 (target {'>= 0.97x' if floor < 1 else '> 1x'}): "
                         + "; ".join(_vs(a, b, key, floor) for key in _protocols(a, b)))
    if ("ml-1m", "sasrec-id") in m:
        r = m[("ml-1m", "sasrec-id")]
        lines.append("- ml-1m: sasrec-id NDCG@10 vs SASRec+ 0.1857 (target >= 95%, 0.176): "
                     + "; ".join(f"{label} {r[key]:.4f} = {r[key] / 0.1857:.0%} {_met(r[key] >= 0.95 * 0.1857)}"
                                 + _noise(r, key, 0.95 * 0.1857) for label, key in _protocols(r)))
    for model in ("fewshot-rec", "sasrec-id"):
        if ("scientific", model) in m:
            r = m[("scientific", model)]
            lines.append(f"- scientific: {model} NDCG@10 (kept, VQ-Rec's protocol) {r['ndcg@10']:.4f} vs VQ-Rec 0.0645: "
                         + _met(r["ndcg@10"] >= 0.0645) + _noise(r, "ndcg@10", 0.0645))
    return "\n".join(lines + ["", "Settings, likely reasons and the known issue behind a miss: bench/README.md, section "
                                 "'Backbone benchmark'."])


def _protocols(*rows: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, row key) of NDCG@10 under each protocol every given row has."""
    both = [("kept", "ndcg@10"), ("excl", "ndcg@10_hist_excl")]
    return [(label, key) for label, key in both if all(r.get(key) is not None for r in rows)]


def _vs(a: dict[str, Any], b: dict[str, Any], protocol: tuple[str, str], floor: float) -> str:
    label, key = protocol
    ok = a[key] >= floor * b[key] if floor < 1 else a[key] > b[key]
    return f"{label} {a[key]:.4f} vs {b[key]:.4f} ({a[key] / b[key]:.2f}x) {_met(ok)}"


def _noise(r: dict[str, Any], key: str, target: float) -> str:
    """How far below ``target`` the row is, in standard errors over users (nothing when above)."""
    se = r.get(f"{key}_se")
    return f" (gap {(target - r[key]) / se:.1f} standard errors over users)" if se and r[key] < target else ""


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def report(name: str, args: argparse.Namespace, protocol: dict[str, Any], rows: list[dict], curves: dict) -> Path:
    args.results_dir.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, args.results_dir / f"{name}_learning_curves.png")
    curves_json = json.dumps({"metric": "val_ndcg@10 per epoch (popularity: constant)", "curves": curves}, indent=1)
    atomic_write_bytes(args.results_dir / f"{name}_curves.json", curves_json.encode())
    wall = protocol.get("total_wall_s", 0.0)
    notes = f"Total wall time: {wall / 60:.1f} min.\n\n{target_checks(rows)}\n\n{REFERENCES}"
    return write_results(name, protocol, rows, notes=notes, results_dir=args.results_dir)


def load_saved(results_dir: Path, name: str) -> tuple[dict[str, Any], dict]:
    """The saved ``<name>.json`` and its curves; exits with what to run when there are none."""
    paths = (results_dir / f"{name}.json", results_dir / f"{name}_curves.json")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"no saved results to work on ({', '.join(missing)} missing): run the benchmark first, "
                         "or point --results-dir/--name at an earlier run")
    return json.loads(paths[0].read_text()), json.loads(paths[1].read_text())["curves"]


def merge_saved(results_dir: Path, name: str, rows: list[dict], curves: dict,
                protocol: dict[str, Any]) -> tuple[list[dict], dict, dict[str, Any]]:
    """This run's (dataset, model) rows replace their saved ones; every other saved row stays (two
    runs may each cover some models of one dataset, e.g. a resumed model beside the others)."""
    path = results_dir / f"{name}.json"
    if not path.exists():
        return rows, curves, protocol
    saved, saved_curves = load_saved(results_dir, name)
    ours = {(r["dataset"], r["model"]) for r in rows}
    kept = [r for r in saved["rows"] if (r["dataset"], r["model"]) not in ours]
    key = "setting (identical for sasrec-id and fewshot-rec)"
    saved_settings = saved["protocol"].get(key, {})
    settings = {**saved_settings, **{d: {**saved_settings.get(d, {}), **s} for d, s in protocol[key].items()}}
    wall = saved["protocol"].get("total_wall_s", 0.0) + protocol["total_wall_s"]
    merged_curves = {d: {**saved_curves.get(d, {}), **curves.get(d, {})} for d in {**saved_curves, **curves}}
    order: dict[str, int] = {}
    for r in saved["rows"] + rows:  # datasets in the order they were first saved
        order.setdefault(r["dataset"], len(order))
    merged = sorted(kept + rows, key=lambda r: (order[r["dataset"]], MODELS.index(r["model"])))
    return merged, merged_curves, {**protocol, key: settings, "total_wall_s": round(wall, 1)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.datasets is None:
        args.datasets = ["scientific"] if args.quick else list(DATASETS)
    name = args.name or ("backbone-quick" if args.quick else "backbone")
    if args.report_only:
        saved, curves = load_saved(args.results_dir, name)
        log(f"rewrote {report(name, args, saved['protocol'], saved['rows'], curves)} from the saved rows")
        return 0
    import torch

    from rec.ray_session import ray_session

    if args.rescore:
        torch.set_num_threads(2)
        saved = rescore_saved(args, name)
        curves = load_saved(args.results_dir, name)[1]
        log(f"rewrote {report(name, args, saved['protocol'], saved['rows'], curves)} with history-excluded metrics")
        return 0

    torch.set_num_threads(2)  # the final test evaluation runs on the driver
    t0 = time.perf_counter()
    rows, curves = [], {}
    with ray_session(RayConfig(num_cpus=2)):
        for d in args.datasets:
            r, c = bench_dataset(DATASETS[d], args.models, args)
            rows += r
            curves[d] = c
    wall_s = time.perf_counter() - t0
    protocol = protocol_dict(args, args.datasets, wall_s)
    if args.merge:
        rows, curves, protocol = merge_saved(args.results_dir, name, rows, curves, protocol)
    path = report(name, args, protocol, rows, curves)
    log(f"wrote {path} in {wall_s / 60:.1f} min total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
