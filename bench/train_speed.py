"""Training speed and learning per epoch (issue 16): our loop vs a minimal reference SASRec.

Same data (the project's loaders and leave-one-out split), same size (ID-only, d_model 64, 2
layers, 2 heads, window 50, full-softmax CE, batch 128, lr 2e-3), same torch threads, one process,
the two implementations interleaved epoch by epoch so a shared machine's noise hits both alike.
Validation NDCG@10 of both is computed by the project's metric code (``rec.metrics``) over the same
seeded 2,000-user sample, full ranking over the catalog.

Rows (``impl``): ``reference`` (``bench/sasrec_reference.py``), ``rec`` (the pure loop that every
Ray Train worker runs: ``rec.training.loop.train_epoch`` + ``evaluate_corpus``), and with ``--ray``
``rec-ray`` (the same config through ``rec pretrain``'s Ray Train path: its per-epoch overhead and
start-up, reported separately).

Usage::

    python bench/train_speed.py                          # scientific, beauty, ml-1m; 3 epochs; --ray
    python bench/train_speed.py --datasets scientific --no-ray
    python bench/train_speed.py --quick                  # CI smoke: ml-100k slice, 1 epoch, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see bench/backbone.py

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._results import RESULTS, log, peak_rss_mb, write_results  # noqa: E402
from bench.backbone import sample_validation  # noqa: E402
from rec.config import RecConfig, TenantSource, load_config  # noqa: E402
from rec.training.corpus import Corpus, build_corpus  # noqa: E402

SETTING = {
    "data.max_seq_len": 50, "model.max_len": 50, "model.d_model": 64, "model.n_layers": 2, "model.n_heads": 2,
    "model.use_text": False, "model.use_id_embedding": True, "train.lr": 2e-3, "train.batch_size": 128,
    "train.torch_threads": 2, "train.num_workers": 1, "train.max_eval_users": None, "train.resume": False,
}
VAL_USERS = 2000
#: name -> (loader format, folder under the datasets directory); the first three as in bench/backbone.py.
SOURCES = {
    "scientific": ("unisrec", "amazon-scientific-unisrec"),
    "beauty": ("seqrec", "seqrec-benchmark/amazon2014-beauty"),
    "ml-1m": ("movielens-1m-tsv", "ml-1m"),
    "ml-100k": ("movielens-100k", "ml-100k"),
}
KS = [10, 20]


@dataclass
class Epoch:
    train_s: float
    eval_s: float
    wall_s: float
    val: dict[str, float]
    flops: float


# --- data -----------------------------------------------------------------------------------------
def run_config(args: argparse.Namespace, name: str, quick: bool) -> RecConfig:
    setting = {**SETTING, "train.epochs": args.epochs, "train.patience": args.epochs + 1,
               "train.output_dir": str(args.runs_dir / name), "train.run_name": f"speed-{name}",
               "train.torch_threads": args.threads, "eval.ks": KS}
    if quick:
        setting.update({"data.max_seq_len": 20, "model.max_len": 20})
    return load_config(None, [f"{k}={'null' if v is None else str(v).lower() if isinstance(v, bool) else v}" for k, v in setting.items()])


def load_corpus(name: str, args: argparse.Namespace) -> tuple[Corpus, RecConfig]:
    """ID-only corpus of one dataset, validation restricted to the seeded 2,000-user sample."""
    from rec.data.loaders import load_source

    fmt, folder = SOURCES[name]
    src = TenantSource(format=fmt, path=str(args.data_dir / folder), name=name, max_users=300 if args.quick else None)
    tenant = load_source(src, min_seq_len=3)
    cfg = run_config(args, name, args.quick)
    corpus = sample_validation(build_corpus(cfg, tenants=[tenant]), tenant, VAL_USERS, cfg.train.seed)
    return corpus, cfg


# --- arithmetic -----------------------------------------------------------------------------------
def batch_shapes(corpus: Corpus, rows: np.ndarray, batch_size: int, trimmed: bool) -> tuple[int, int]:
    """(positions encoded, positions scored) of one epoch: the reference encodes the full window,
    ``rec`` the window trimmed to the batch's longest history (``rec.training.loop.trim_padding``)."""
    from rec.training.loop import iterate_batches

    tc = corpus.tenants[0]
    scored = int((tc.train_targets[rows] >= 0).sum())
    if not trimmed:
        return len(rows) * corpus.max_len, scored
    return sum(int(x.numel()) for _, x, _ in iterate_batches(corpus, rows, batch_size)), scored


def matmul_rates(d: int, num_items: int, threads: int) -> dict[str, float]:
    """Measured ``torch.mm`` GFLOP/s at the model's shapes: projections ``(6400, d) x (d, d..4d)``
    and logits ``(1024, d) x (d, N)``."""
    import torch

    torch.set_num_threads(threads)
    out = {}
    for name, (m, k, n) in {"proj": (6400, d, 2 * d), "logits": (1024, d, num_items)}.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.5:
            torch.mm(a, b)
            reps += 1
        out[name] = 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9
    return out


def epoch_flops(tokens: int, scored: int, cfg: RecConfig, num_items: int, rates: dict[str, float]) -> tuple[float, float]:
    """(FLOPs, seconds at the measured mm rates) of one epoch's matmuls, forward + backward."""
    from bench.sasrec_reference import reference_matmul_flops

    m = cfg.model
    total = reference_matmul_flops(tokens, scored, num_items, m.d_model, m.n_layers, cfg.data.max_seq_len)
    logits = 3 * 2 * scored * m.d_model * num_items
    return total, logits / (rates["logits"] * 1e9) + (total - logits) / (rates["proj"] * 1e9)


# --- the two implementations ----------------------------------------------------------------------
class Reference:
    def __init__(self, corpus: Corpus, cfg: RecConfig) -> None:
        import torch

        from bench.sasrec_reference import ReferenceSASRec

        torch.manual_seed(cfg.train.seed)
        m = cfg.model
        self.tc, self.cfg = corpus.tenants[0], cfg
        self.model = ReferenceSASRec(self.tc.num_items, m.d_model, m.n_layers, m.n_heads, cfg.data.max_seq_len, m.dropout)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr)

    def train(self, epoch: int) -> float:
        from bench.sasrec_reference import reference_train_epoch

        tc = self.tc
        return reference_train_epoch(self.model, self.opt, tc.train_inputs, tc.train_targets, self.cfg.train.batch_size,
                                     seed=self.cfg.train.seed * 1000 + epoch)

    def validate(self) -> dict[str, float]:
        import torch

        from rec.metrics import metrics_from_ranks, rank_of_target

        self.model.eval()
        v, ranks = self.tc.valid, []
        with torch.no_grad():
            for s in range(0, len(v.targets), 256):
                h = self.model.hidden(torch.from_numpy(np.ascontiguousarray(v.histories[s : s + 256])))[:, -1]
                ranks.append(rank_of_target(self.model.logits(h).numpy(), v.targets[s : s + 256]))
        return metrics_from_ranks(np.concatenate(ranks), ks=KS, num_items=self.tc.num_items)


class RecLoop:
    """What a Ray Train worker runs per epoch, without Ray (``rec.training.ray_train``)."""

    def __init__(self, corpus: Corpus, cfg: RecConfig) -> None:
        import torch

        from rec.models.backbone import build_backbone
        from rec.training.loop import CorpusLoss, make_optimizer

        torch.manual_seed(cfg.train.seed)
        self.corpus, self.cfg = corpus, cfg
        self.model = build_backbone(cfg.model, num_item_ids=corpus.num_item_ids)
        self.opt = make_optimizer(self.model.parameters(), cfg.train.lr, cfg.train.weight_decay)
        self.loss = CorpusLoss(self.model, cfg.model.loss, cfg.model.num_negatives)

    def rows(self, epoch: int) -> np.ndarray:
        from rec.training.batches import shard_rows

        return shard_rows(self.corpus.num_train_rows, epoch, self.cfg.train.seed, 0, 1)

    def train(self, epoch: int) -> float:
        from rec.training.loop import train_epoch

        tc = self.cfg.train
        return train_epoch(self.loss, self.opt, self.corpus, self.rows(epoch), [None], tc.batch_size, tc.grad_clip)

    def validate(self) -> dict[str, float]:
        from rec.training.loop import evaluate_corpus

        return evaluate_corpus(self.model, self.corpus, [None], "valid", KS, self.cfg.eval.batch_size)["all"]


def run_side_by_side(corpus: Corpus, cfg: RecConfig, rates: dict[str, float], epochs: int) -> tuple[dict[str, list[Epoch]], dict[str, float]]:
    """Both implementations, interleaved epoch by epoch (noise on a shared machine hits both).

    Returns the epochs of each and, per implementation, the seconds its matmuls of one epoch take
    at the measured ``torch.mm`` rates (the cost of the arithmetic alone).
    """
    import torch

    torch.set_num_threads(cfg.train.torch_threads)
    impls = {"reference": Reference(corpus, cfg), "rec": RecLoop(corpus, cfg)}
    rows = impls["rec"].rows(0)
    n = corpus.tenants[0].num_items
    cost = {name: epoch_flops(*batch_shapes(corpus, rows, cfg.train.batch_size, name == "rec"), cfg, n, rates) for name in impls}
    out: dict[str, list[Epoch]] = {k: [] for k in impls}
    for epoch in range(epochs):
        for name, impl in impls.items():
            t0 = time.perf_counter()
            impl.train(epoch)
            t1 = time.perf_counter()
            val = impl.validate()
            t2 = time.perf_counter()
            out[name].append(Epoch(t1 - t0, t2 - t1, t2 - t0, val, cost[name][0]))
            log(f"  {name:<9} epoch {epoch + 1}: train {t1 - t0:.2f}s eval {t2 - t1:.2f}s ndcg@10 {val['ndcg@10']:.4f}")
    return out, {name: c[1] for name, c in cost.items()}


def run_on_ray(corpus: Corpus, cfg: RecConfig, epochs: int) -> dict[str, Any]:
    """``rec pretrain``'s Ray Train path (1 worker): seconds per epoch and start-up.

    Per epoch = the gap between the last two checkpoints' timestamps (Ray names each
    ``checkpoint_<time>``; one per epoch, after train + validation + report): one epoch of the
    Ray run, start-up excluded. Start-up = fit wall time - epochs x that.
    """
    from datetime import datetime
    from pathlib import Path as _Path

    from rec.training.ray_train import pretrain

    if epochs < 2:
        raise ValueError("the Ray Train row needs >= 2 epochs (per-epoch time is a gap between checkpoints)")
    res = pretrain(cfg, corpus=corpus)
    run_dir = _Path(cfg.train.output_dir).resolve() / "ray" / cfg.train.run_name
    stamps = sorted(datetime.strptime(p.name[len("checkpoint_"):], "%Y-%m-%d_%H-%M-%S.%f").timestamp()
                    for p in run_dir.glob("checkpoint_20*") if p.is_dir())
    per_epoch = stamps[-1] - stamps[-2]
    hist = res.history
    return {"fit_s": res.train_s, "per_epoch_s": per_epoch, "startup_s": res.train_s - epochs * per_epoch,
            "train_s": float(np.median([h["epoch_train_s"] for h in hist])),
            "val": {k[4:]: v for k, v in hist[-1].items() if k.startswith("val_")},
            "val_ep1": hist[0]["val_ndcg@10"]}


# --- rows -----------------------------------------------------------------------------------------
def speed_row(dataset: str, impl: str, epochs: list[Epoch], secs_at_peak: float, rss: float) -> dict[str, Any]:
    train_s = float(np.median([e.train_s for e in epochs]))
    eval_s = float(np.median([e.eval_s for e in epochs]))
    epoch_s = float(np.median([e.wall_s for e in epochs]))
    last = epochs[-1].val
    return {
        "dataset": dataset, "impl": impl, "epoch_s": round(epoch_s, 2), "train_s": round(train_s, 2),
        "eval_s": round(eval_s, 2), "overhead_s": round(max(epoch_s - train_s - eval_s, 0.0), 3),
        "val_ndcg@10_ep1": epochs[0].val["ndcg@10"], "val_ndcg@10_ep3": epochs[min(2, len(epochs) - 1)].val["ndcg@10"],
        "val_ndcg@20": last["ndcg@20"], "val_recall@20": last["recall@20"], "val_auc": last["auc"],
        "gflops": round(epochs[0].flops / train_s / 1e9, 1), "mm_peak_gflops": round(epochs[0].flops / secs_at_peak / 1e9, 1),
        "arith_frac": round(secs_at_peak / train_s, 3), "peak_rss_mb": rss,
    }


def bench_dataset(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    corpus, cfg = load_corpus(name, args)
    tc = corpus.tenants[0]
    rates = matmul_rates(cfg.model.d_model, tc.num_items, args.threads)
    log(f"{name}: {tc.num_items} items, {len(tc.train_inputs)} train rows, {len(tc.valid.targets)} val users "
        f"({time.perf_counter() - t0:.1f}s); torch.mm GFLOP/s " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))
    res, secs_at_peak = run_side_by_side(corpus, cfg, rates, args.epochs)
    rss = peak_rss_mb(include_children=False)
    rows = [speed_row(name, impl, epochs, secs_at_peak[impl], rss) for impl, epochs in res.items()]
    ref, rec = rows[0], rows[1]
    if args.ray:
        rows.append(ray_row(name, corpus, cfg, args.epochs, rec))
    log(f"  {name}: rec/reference epoch time {rec['epoch_s'] / ref['epoch_s']:.2f}x; ndcg@10 ep1 {rec['val_ndcg@10_ep1']:.4f} vs "
        f"{ref['val_ndcg@10_ep1']:.4f}, ep3 {rec['val_ndcg@10_ep3']:.4f} vs {ref['val_ndcg@10_ep3']:.4f}")
    return rows


def ray_overhead(per_epoch_s: float, train_s: float, loop_eval_s: float) -> float:
    """Ray Train's own seconds per epoch: the Ray epoch (checkpoint gap) minus its training time
    (both from the same run, so a shared machine's load cancels) minus the pure loop's validation."""
    return round(per_epoch_s - train_s - loop_eval_s, 2)


def ray_row(name: str, corpus: Corpus, cfg: RecConfig, epochs: int, loop_row: dict[str, Any]) -> dict[str, Any]:
    from rec.config import RayConfig
    from rec.ray_session import ray_session

    with ray_session(RayConfig(num_cpus=2)):
        r = run_on_ray(corpus, cfg, epochs)
    log(f"  rec-ray: fit {r['fit_s']:.1f}s, per epoch {r['per_epoch_s']:.2f}s (loop {loop_row['epoch_s']:.2f}s), start-up {r['startup_s']:.1f}s")
    return {
        "dataset": name, "impl": "rec-ray", "epoch_s": round(r["per_epoch_s"], 2), "train_s": round(r["train_s"], 2),
        "eval_s": loop_row["eval_s"], "overhead_s": ray_overhead(r["per_epoch_s"], r["train_s"], loop_row["eval_s"]),
        "ray_startup_s": round(r["startup_s"], 1), "val_ndcg@10_ep1": r["val_ep1"], "val_ndcg@10_ep3": r["val"].get("ndcg@10"),
        "val_ndcg@20": r["val"].get("ndcg@20"), "val_recall@20": r["val"].get("recall@20"), "val_auc": r["val"].get("auc"),
    }


# --- report ---------------------------------------------------------------------------------------
def target_checks(rows: list[dict[str, Any]]) -> str:
    """Issue 16's targets against this run: epoch time <= 1.2x the reference, NDCG@10 after 1 and 3
    epochs >= the reference's."""
    lines = ["Targets (issue 16, checked against this run):", ""]
    by = {(r["dataset"], r["impl"]): r for r in rows}
    for d in dict.fromkeys(r["dataset"] for r in rows):
        ref, rec = by.get((d, "reference")), by.get((d, "rec"))
        if not (ref and rec):
            continue
        ratio = rec["epoch_s"] / ref["epoch_s"]
        ok = {"time": ratio <= 1.2, "ep1": rec["val_ndcg@10_ep1"] >= ref["val_ndcg@10_ep1"],
              "ep3": rec["val_ndcg@10_ep3"] >= ref["val_ndcg@10_ep3"]}
        mark = {k: "**met**" if v else "**not met**" for k, v in ok.items()}
        lines.append(f"- {d}: epoch time rec/reference {ratio:.2f}x (<= 1.2x): {mark['time']}; val NDCG@10 epoch 1 "
                     f"{rec['val_ndcg@10_ep1']:.4f} vs {ref['val_ndcg@10_ep1']:.4f}: {mark['ep1']}; epoch 3 "
                     f"{rec['val_ndcg@10_ep3']:.4f} vs {ref['val_ndcg@10_ep3']:.4f}: {mark['ep3']}")
        ray = by.get((d, "rec-ray"))
        if ray:
            lines.append(f"  - Ray Train (`rec pretrain`, 1 worker): {ray['epoch_s']:.2f} s per epoch, i.e. "
                         f"{ray['overhead_s']:+.2f} s per epoch of report + checkpoint over the pure loop, plus {ray['ray_startup_s']:.1f} s start-up per run")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], curves: dict[str, dict[str, list[float]]], path: Path, epochs: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = list(curves)
    fig, axes = plt.subplots(2, len(ds), figsize=(4.2 * len(ds), 6.4), squeeze=False)
    for j, d in enumerate(ds):
        for impl, c in curves[d].items():
            axes[0][j].plot([1, epochs][: len(c)], c, marker="o", label=impl)
        axes[0][j].set(title=d, xlabel="epoch", ylabel="val NDCG@10", xticks=[1, epochs])
        axes[0][j].legend(fontsize=8)
        # Only the side-by-side pair: rec-ray ran at another time, under another load.
        mine = [r for r in rows if r["dataset"] == d and r["impl"] in ("reference", "rec")]
        axes[1][j].bar([r["impl"] for r in mine], [r["epoch_s"] for r in mine], color=["grey", "tab:blue"][: len(mine)])
        ratio = f"rec / reference = {mine[1]['epoch_s'] / mine[0]['epoch_s']:.2f}x" if len(mine) == 2 else ""
        axes[1][j].set(ylabel="seconds per epoch (train + validation)", title=ratio)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    plt.close(fig)


PROTOCOL = {
    "data": "the project's loaders and leave-one-out split (bench/backbone.py's datasets); ID-only; validation = "
            "seeded 2,000-user sample, full ranking over the catalog, history not excluded, both implementations "
            "ranked by rec.metrics",
    "setting": "d_model 64, 2 layers, 2 heads, window 50 (ml-1m too), dropout 0.2, full-softmax CE on every real "
               "position, batch 128, lr 2e-3 (reference: Adam; rec: its AdamW, weight decay 0), same torch threads, "
               "one process, the two implementations interleaved epoch by epoch",
    "columns": "epoch_s = train + validation wall seconds (median over epochs; rec-ray: the gap between its last "
               "two per-epoch checkpoints); overhead_s = the rest of the epoch (rec-ray: epoch_s - its own train_s - the "
               "loop's eval_s = Ray Train's report + checkpoint cost per epoch; ray_startup_s: once per run); "
               "gflops = counted matmul FLOPs (fwd + bwd) / train_s; mm_peak_gflops = the same FLOPs / the time "
               "torch.mm takes for them at the model's shapes, measured here; arith_frac = that time / train_s; "
               "peak_rss_mb = this process",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", choices=list(SOURCES), default=None,
                   help="default: scientific beauty ml-1m (ml-100k with --quick)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ray", action=argparse.BooleanOptionalAction, default=None,
                   help="also time rec pretrain's Ray Train path (default: on, off with --quick)")
    p.add_argument("--quick", action="store_true", help="CI smoke: 300 users of ml-100k, window 20, 1 epoch")
    p.add_argument("--name", default=None)
    p.add_argument("--report-only", action="store_true", help="rebuild <name>.md/.png from <name>.json")
    p.add_argument("--append", action="store_true",
                   help="keep the rows of other datasets already in <name>.json (run the datasets one at a time)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="data root (default: $REC_DATA_ROOT, else ../shared/datasets beside the repo)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench-train-speed")
    args = p.parse_args(argv)
    if args.quick:
        args.datasets = args.datasets or ["ml-100k"]
        args.epochs = 1 if "--epochs" not in (argv or sys.argv) else args.epochs
    args.datasets = args.datasets or ["scientific", "beauty", "ml-1m"]
    args.ray = (not args.quick) if args.ray is None else args.ray
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rec.data.paths import data_root
    from rec.data.schema import DataError

    try:
        args.data_dir = data_root(args.data_dir, os.environ.get("REC_DATA_ROOT"))
    except DataError as e:
        print(f"error: {e} (or pass --data-dir)", file=sys.stderr)
        return 2
    name = args.name or ("train_speed-quick" if args.quick else "train_speed")
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    if args.report_only:
        saved = json.loads((args.results_dir / f"{name}.json").read_text())
        rows = saved["rows"]
        loop = {r["dataset"]: r for r in rows if r["impl"] == "rec"}
        for r in rows:
            if r["impl"] == "rec-ray":
                r["overhead_s"] = ray_overhead(r["epoch_s"], r["train_s"], loop[r["dataset"]]["eval_s"])
        return write_report(name, args, rows, {**saved["protocol"], "columns": PROTOCOL["columns"]})
    for d in args.datasets:
        rows += bench_dataset(d, args)
    if args.append and (args.results_dir / f"{name}.json").is_file():
        old = json.loads((args.results_dir / f"{name}.json").read_text())["rows"]
        rows = [r for r in old if r["dataset"] not in args.datasets] + rows
    protocol = {**PROTOCOL, "epochs": args.epochs, "threads": args.threads, "quick": args.quick,
                "total_wall_s": round(time.perf_counter() - t0, 1)}
    return write_report(name, args, rows, protocol)


def write_report(name: str, args: argparse.Namespace, rows: list[dict[str, Any]], protocol: dict[str, Any]) -> int:
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    curves = {d: {r["impl"]: [r["val_ndcg@10_ep1"], r["val_ndcg@10_ep3"]] for r in rows if r["dataset"] == d} for d in datasets}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    plot(rows, curves, args.results_dir / f"{name}.png", int(protocol.get("epochs", 3)))
    path = write_results(name, protocol, rows, notes=target_checks(rows), results_dir=args.results_dir)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
