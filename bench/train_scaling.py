"""Ray Train scaling: training throughput of 1 vs 2 DDP workers, on one node and across two nodes.

Setups (same data, same model, same epochs, ``torch_threads=1`` in every worker):

    1-worker             local Ray (2 CPUs), 1 Ray Train worker
    2-workers-1-node     local Ray (2 CPUs), 2 workers (DDP over gloo)
    2-workers-2-nodes    ray.cluster_utils.Cluster: head + worker node, 1 CPU each, STRICT_SPREAD
    1-worker-2-threads   (``--threads-baseline``) 1 worker with torch_threads=2: the other way to
                         spend 2 cores, for context

Every worker gets one torch thread so that "2 workers" means "2 cores' worth of compute" against
"1 core" for the 1-worker run; DDP then has to beat its own gradient all-reduce and the shorter
per-rank batches. The simulated nodes share this one machine (and its 2 cores): the 2-node setup
measures Ray's placement and gloo over TCP between processes, not a real network.

Each setup runs in its own process with its own Ray (a process holds one Ray connection) and a
private ``RAY_TMPDIR`` (``Cluster`` writes ``ray_current_cluster`` there; a stale one in the shared Ray temp folder
would make other local ``ray.init(num_cpus=...)`` calls on the machine try to join it).

``samples_per_s`` is the median over the epochs after the first of (training rows of all ranks /
rank 0's training time of that epoch); validation and checkpointing are excluded.

Usage::

    python bench/train_scaling.py                       # Amazon-2014 Beauty, 3000 users, 4 epochs
    python bench/train_scaling.py --synthetic --epochs 3
    python bench/train_scaling.py --threads-baseline    # also 1 worker x 2 torch threads
    python bench/train_scaling.py --repeats 2           # interleaved repeats against host noise
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make `bench` and `rec` importable

from bench._results import RESULTS, write_results  # noqa: E402

BEAUTY = Path("seqrec-benchmark/amazon2014-beauty")  # under the data root ($REC_DATA_ROOT or ../shared/datasets)
SETUPS: dict[str, dict[str, int]] = {
    "1-worker": {"workers": 1, "nodes": 1, "torch_threads": 1},
    "2-workers-1-node": {"workers": 2, "nodes": 1, "torch_threads": 1},
    "2-workers-2-nodes": {"workers": 2, "nodes": 2, "torch_threads": 1},
    "1-worker-2-threads": {"workers": 1, "nodes": 1, "torch_threads": 2},
}
MODEL = {"model.d_model": 64, "model.n_layers": 2, "model.n_heads": 2, "model.dropout": 0.2}
TRAIN = {"train.batch_size": 128, "train.lr": 1e-3, "train.max_eval_users": 1000, "train.resume": False}


_PROBE = "import time,torch;torch.set_num_threads(1);a=torch.randn(512,512);t=time.perf_counter();[a@a for _ in range(200)];print(time.perf_counter()-t)"


def parallel_capacity() -> float:
    """Cores this run can actually get: 2 x (time of one 1-thread matmul loop alone / time of two
    copies at once). ~2.0 on an idle 2-core machine, ~1.0 when other load leaves one core's worth."""

    def timed(n: int) -> float:
        procs = [subprocess.Popen([sys.executable, "-c", _PROBE], stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return max(float(p.communicate()[0]) for p in procs)

    alone, pair = [], []
    for _ in range(3):  # interleaved: the host's load moves by the second
        alone.append(timed(1))
        pair.append(timed(2))
    return round(2 * statistics.median(alone) / statistics.median(pair), 2)


def log(msg: str) -> None:
    print(f"[train_scaling {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def overrides(args: argparse.Namespace, setup: str, out_dir: Path) -> list[str]:
    s = SETUPS[setup]
    ov: dict[str, Any] = {
        **MODEL,
        **TRAIN,
        "train.epochs": args.epochs,
        "train.patience": args.epochs + 1,  # every setup runs every epoch
        "train.num_workers": s["workers"],
        "train.torch_threads": s["torch_threads"],
        "train.placement_strategy": "STRICT_SPREAD" if s["nodes"] == 2 else "PACK",
        "train.output_dir": str(out_dir),
        "train.run_name": setup,
    }
    if args.synthetic:
        ov.update({"data.synthetic.tenants": 4, "data.synthetic.users_per_tenant": 1000, "data.synthetic.items_per_tenant": 500})
    else:
        ov.update({"data.max_seq_len": 50, "model.max_len": 50})
    return [f"{k}={v}" for k, v in ov.items()]


def run_setup(setup: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Child process: start this setup's Ray, pretrain, return the history and timings."""
    import ray
    from ray.cluster_utils import Cluster

    from rec.config import TenantSource, load_config
    from rec.ray_session import LOCAL_RUNTIME_ENV
    from rec.training.corpus import build_corpus
    from rec.training.ray_train import pretrain

    cfg = load_config(None, overrides(args, setup, out_dir))
    if not args.synthetic:
        src = TenantSource(format="seqrec", path=str(args.dataset), name="beauty", max_users=args.max_users)
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"sources": [src]})})
    corpus = build_corpus(cfg)
    cluster = None
    if SETUPS[setup]["nodes"] == 2:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, runtime_env=LOCAL_RUNTIME_ENV, log_to_driver=False)
    else:
        ray.init(num_cpus=2, include_dashboard=False, runtime_env=LOCAL_RUNTIME_ENV, log_to_driver=False)
    load_before = os.getloadavg()[0]
    try:
        res = pretrain(cfg, corpus=corpus)
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    keep = ("epoch", "train_loss", "samples_per_s", "epoch_train_s", "worker_nodes", "val_ndcg@10")
    return {
        "history": [{k: h[k] for k in keep} for h in res.history],
        "fit_s": res.train_s,
        "train_rows": corpus.num_train_rows,
        "num_items": corpus.num_item_ids,
        "loadavg_1m": [load_before, os.getloadavg()[0]],
    }


def summarize(setup: str, children: list[dict[str, Any]]) -> dict[str, Any]:
    """One row per setup; with repeats, the median over runs of each run's steady-state median."""
    s = SETUPS[setup]
    per_run = []
    for child in children:
        steady = child["history"][1:] or child["history"]
        per_run.append((statistics.median(h["samples_per_s"] for h in steady), statistics.median(h["epoch_train_s"] for h in steady)))
    last = children[-1]
    nodes = {n for h in last["history"] for n in h["worker_nodes"].split(",")}
    return {
        "setup": setup,
        "workers": s["workers"],
        "nodes": len(nodes),
        "torch_threads": s["torch_threads"],
        "samples_per_s": round(statistics.median(r[0] for r in per_run), 1),
        "epoch_s": round(statistics.median(r[1] for r in per_run), 2),
        "runs_samples_per_s": "/".join(f"{r[0]:.0f}" for r in per_run),
        "fit_s": round(statistics.median(c["fit_s"] for c in children), 1),
        "final_train_loss": round(last["history"][-1]["train_loss"], 4),
        "final_val_ndcg@10": round(last["history"][-1]["val_ndcg@10"], 4),
        "loadavg_1m": " ".join("/".join(f"{x:.1f}" for x in c["loadavg_1m"]) for c in children),
    }


def plot(rows: list[dict[str, Any]], path: Path, capacity: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    names = [r["setup"] for r in rows]
    vals = [r["samples_per_s"] for r in rows]
    bars = ax.bar(names, vals, color=["#888888", "#1f77b4", "#ff7f0e", "#2ca02c"][: len(rows)])
    for b, r in zip(bars, rows):
        ax.annotate(f"{r['samples_per_s']:.0f}\n({r['speedup']:.2f}x)", (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("training samples / s")
    ax.set_title(f"Ray Train DDP, shared 2-core host (parallel capacity {min(capacity):.1f}-{max(capacity):.1f} cores)\n"
                 "torch_threads=1 per worker except 1-worker-2-threads", fontsize=9)
    ax.set_ylim(0, max(vals) * 1.25)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--synthetic", action="store_true", help="use the embedded synthetic data (4 tenants x 1000 users)")
    p.add_argument("--dataset", type=Path, default=BEAUTY, help="a seqrec-format folder (relative: under the data root)")
    p.add_argument("--max-users", type=int, default=3000)
    p.add_argument("--threads-baseline", action="store_true", help="add the 1-worker-2-threads row")
    p.add_argument("--setups", nargs="+", choices=list(SETUPS), default=None)
    p.add_argument("--repeats", type=int, default=1, help="run every setup this many times, interleaved")
    p.add_argument("--name", default="train_scaling")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--child", choices=list(SETUPS), help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _child_argv(args: argparse.Namespace, setup: str, out: Path) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", setup, "--child-out", str(out),
            "--epochs", str(args.epochs), "--dataset", str(args.dataset), "--max-users", str(args.max_users)]
    return argv + (["--synthetic"] if args.synthetic else [])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        out_dir = Path(tempfile.mkdtemp(prefix=f"scaling-{args.child}-"))
        try:
            args.child_out.write_text(json.dumps(run_setup(args.child, args, out_dir)))
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        return 0
    if not args.synthetic and not args.dataset.is_absolute():
        from rec.config import DATA_ROOT_ENV
        from rec.data.paths import data_root

        args.dataset = data_root(None, os.environ.get(DATA_ROOT_ENV)) / args.dataset
    if not args.synthetic and not args.dataset.is_dir():
        raise SystemExit(f"dataset folder {args.dataset} not found: pass --dataset or use --synthetic")
    setups = args.setups or [s for s in SETUPS if s != "1-worker-2-threads" or args.threads_baseline]
    t0 = time.perf_counter()
    capacity = [parallel_capacity()]
    log(f"parallel capacity before: {capacity[0]} cores")
    runs: dict[str, list[dict[str, Any]]] = {setup: [] for setup in setups}
    for rep in range(args.repeats):  # interleaved, so a burst of load on the shared host hits every setup
        for setup in setups:
            ray_tmp = tempfile.mkdtemp(prefix="rts", dir="/tmp")  # short: Ray's unix socket paths
            out = Path(ray_tmp) / "child.json"
            env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
            log(f"{setup} (run {rep + 1}/{args.repeats}): starting")
            try:
                subprocess.run(_child_argv(args, setup, out), cwd=ROOT, env=env, check=True)
                runs[setup].append(json.loads(out.read_text()))
            finally:
                shutil.rmtree(ray_tmp, ignore_errors=True)
            log(f"{setup}: {summarize(setup, runs[setup][-1:])}")
    capacity.append(parallel_capacity())
    log(f"parallel capacity after: {capacity[1]} cores")
    rows = [summarize(setup, runs[setup]) for setup in setups]
    child = runs[setups[-1]][-1]
    base = next((r["samples_per_s"] for r in rows if r["setup"] == "1-worker"), rows[0]["samples_per_s"])
    for r in rows:
        r["speedup"] = round(r["samples_per_s"] / base, 2)
    data = "synthetic (4 tenants x 1000 users x 500 items)" if args.synthetic else (
        f"{args.dataset.name} (seqrec), {args.max_users} sampled users, {child['num_items']} items")
    protocol = {
        "data": f"{data}; {child['train_rows']} training rows per epoch",
        "model": f"{MODEL} full-softmax CE over the catalog; {TRAIN}",
        "setups": "1-worker and 2-workers-1-node: local ray.init(num_cpus=2); 2-workers-2-nodes: "
                  "ray.cluster_utils.Cluster head + worker node (1 CPU each, STRICT_SPREAD) on the same machine",
        "threads": "torch_threads=1 in every worker unless the setup says otherwise (1-worker-2-threads)",
        "samples_per_s": f"median over epochs 2..{args.epochs} of (training rows of all ranks / rank 0's "
                         "epoch training time); validation, checkpointing and Ray start-up excluded; with "
                         f"repeats, the median over {args.repeats} interleaved runs (runs_samples_per_s lists each)",
        "epoch_s": "median training time of one epoch (same epochs)",
        "fit_s": "wall time of trainer.fit(): worker start-up, all epochs, validation and checkpoints",
        "speedup": "samples_per_s / samples_per_s of 1-worker",
        "loadavg_1m": "host 1-minute load average before/after the run: the machine is shared, read the "
                      "numbers against it",
        "parallel_capacity": f"{capacity[0]} cores before, {capacity[1]} after: 2 x (time of a 1-thread "
                             "matmul loop alone / time of two copies at once); 2.0 = both cores free, 1.0 = "
                             "other load leaves one core's worth, so 2 workers cannot beat 1",
        "epochs": args.epochs,
        "total_wall_s": round(time.perf_counter() - t0, 1),
    }
    cols = ["setup", "workers", "nodes", "torch_threads", "samples_per_s", "epoch_s", "speedup", "runs_samples_per_s", "fit_s",
            "final_train_loss", "final_val_ndcg@10", "loadavg_1m"]
    path = write_results(args.name, protocol, rows, columns=cols, results_dir=args.results_dir)
    plot(rows, args.results_dir / f"{args.name}.png", capacity)
    log(f"wrote {path} and {args.name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
