"""Pretrain the same config on two simulated nodes and on one node; write a JSON summary.

Used by ``test_multinode.py`` in its own process: a process holds one Ray connection, and the rest
of the test session already holds the local ``ray_local`` one.

One ``ray.cluster_utils.Cluster`` (a head node with 3 CPUs, a worker node with 1 CPU) serves both
runs, and they run at the same time: on a 2-core machine nearly all of a tiny run is Ray starting
processes (~40 s of worker-actor start-up per run against ~1 s of training), not compute.

- ``two-nodes``: ``placement_strategy=STRICT_SPREAD``, so the two ranks must land on different nodes.
- ``one-node``: ``placement_strategy=STRICT_PACK``, so both ranks share a node; only the head fits
  them, which makes this a plain single-node 2-worker run.

Each run trains its own model in its own processes, so running them side by side changes timings,
never results.

Usage::

    RAY_TMPDIR="$(mktemp -d)" python tests/integration/_multinode_driver.py OUT.json WORKDIR key=value ...

Set ``RAY_TMPDIR`` to a private, short folder: Ray's unix socket paths must stay short, and
``Cluster`` writes ``ray_current_cluster`` into Ray's temp folder, where a stale one would make any
later local ``ray.init(num_cpus=...)`` on the machine try to join this (dead) cluster.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HISTORY_KEYS = ("epoch", "train_loss", "samples_per_s", "epoch_train_s", "resumed_from", "worker_nodes", "val_ndcg@10")
LAYOUTS = {"two-nodes": "STRICT_SPREAD", "one-node": "STRICT_PACK"}


def main(out: str, workdir: str, overrides: list[str]) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from rec.config import load_config
    from rec.ray_session import LOCAL_RUNTIME_ENV
    from rec.training.corpus import build_corpus
    from rec.training.ray_train import pretrain

    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "include_dashboard": False})
    worker_node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, runtime_env=LOCAL_RUNTIME_ENV, log_to_driver=False)
    summary: dict = {
        "head_node": cluster.head_node.node_id,
        "worker_node": worker_node.node_id,
        "startup_s": time.perf_counter() - t0,
        "runs": {},
    }

    def run(layout: str) -> dict:
        cfg = load_config(
            None,
            [
                *overrides,
                f"train.placement_strategy={LAYOUTS[layout]}",
                f"train.output_dir={Path(workdir) / layout}",
                f"train.run_name={layout}",
            ],
        )
        res = pretrain(cfg, corpus=corpus)
        return {
            "history": [{k: h.get(k) for k in HISTORY_KEYS} for h in res.history],
            "test_metrics": res.test_metrics,
            "epochs": res.epochs,
            "train_s": res.train_s,
            "checkpoint": str(res.checkpoint),
        }

    try:
        corpus = build_corpus(load_config(None, overrides))
        with ThreadPoolExecutor(len(LAYOUTS)) as pool:
            futures = {layout: pool.submit(run, layout) for layout in LAYOUTS}
            summary["runs"] = {layout: f.result() for layout, f in futures.items()}
    finally:
        ray.shutdown()
        cluster.shutdown()
    summary["wall_s"] = time.perf_counter() - t0
    Path(out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
