"""Multi-node pretraining: ranks on two (simulated) Ray nodes reproduce a single-node run.

The row -> rank assignment is a seeded permutation by rank (``shard_rows``), independent of node
layout, and a 2-rank gloo allreduce sums the same two gradients in the same way wherever the ranks
live, so both layouts should train the same model. Measured on this machine: identical losses and
test metrics, bit for bit; the tolerances below leave room for float round-off only.

The cluster runs in a subprocess (``_multinode_driver.py``) because this process may already hold
the session's local Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from rec.io.artifacts import read_manifest
from tests.conftest import REPO, tiny_overrides

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DRIVER = Path(__file__).with_name("_multinode_driver.py")
LOSS_TOL = 1e-5  # per-epoch mean train loss (float32); observed difference: 0.0
METRIC_TOL = 1e-6  # test metrics; observed difference: 0.0
TIMEOUT_S = 480  # ~60-180 s measured, depending on the shared host's load


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, text_cache):
    # Ray puts unix sockets under its temp folder: keep the path short (pytest's tmp_path is not).
    ray_tmp = tempfile.mkdtemp(prefix="rmn", dir="/tmp")
    work = tmp_path_factory.mktemp("multinode")
    out = work / "summary.json"
    overrides = tiny_overrides(work, text_cache, **{"train.num_workers": 2, "train.epochs": 2, "train.resume": "false"})
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    try:
        proc = subprocess.run(
            [sys.executable, str(DRIVER), str(out), str(work), *overrides],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
        )
        if proc.returncode != 0:
            pytest.fail(f"multi-node driver failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
        yield json.loads(out.read_text())
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_ranks_run_on_different_nodes(layouts):
    spread = layouts["runs"]["two-nodes"]
    for h in spread["history"]:
        nodes = h["worker_nodes"].split(",")
        assert len(nodes) == 2 and len(set(nodes)) == 2, f"epoch {h['epoch']}: both ranks on one node: {nodes}"
        assert set(nodes) == {layouts["head_node"], layouts["worker_node"]}
    packed = layouts["runs"]["one-node"]
    for h in packed["history"]:
        assert h["worker_nodes"].split(",") == [layouts["head_node"]] * 2


def test_two_nodes_match_one_node(layouts):
    spread, packed = layouts["runs"]["two-nodes"], layouts["runs"]["one-node"]
    assert spread["epochs"] == packed["epochs"] == 2
    for a, b in zip(spread["history"], packed["history"], strict=True):
        assert a["epoch"] == b["epoch"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=LOSS_TOL), f"epoch {a['epoch']}"
        assert a["val_ndcg@10"] == pytest.approx(b["val_ndcg@10"], abs=METRIC_TOL), f"epoch {a['epoch']}"
    for tenant, metrics in packed["test_metrics"].items():
        for name, value in metrics.items():
            assert spread["test_metrics"][tenant][name] == pytest.approx(value, abs=METRIC_TOL), f"{tenant} {name}"


def test_multinode_checkpoint_is_a_backbone(layouts):
    manifest = read_manifest(layouts["runs"]["two-nodes"]["checkpoint"], kind="backbone")
    assert manifest["epochs_run"] == 2
