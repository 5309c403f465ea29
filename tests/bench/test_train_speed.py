"""bench/train_speed.py --quick on a real dataset (ml-100k slice): both implementations train,
are ranked by the project's metric code, and every row carries the issue-16 columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bench.sasrec_reference import ReferenceSASRec, reference_train_epoch
from bench.train_speed import main

COLUMNS = {"dataset", "impl", "epoch_s", "train_s", "eval_s", "overhead_s", "val_ndcg@10_ep1", "val_ndcg@10_ep3",
           "val_ndcg@20", "val_recall@20", "val_auc", "gflops", "mm_peak_gflops", "peak_rss_mb"}


def test_quick_run_writes_both_rows(datasets_dir: Path, tmp_path: Path) -> None:
    assert main(["--quick", "--data-dir", str(datasets_dir), "--results-dir", str(tmp_path), "--runs-dir", str(tmp_path / "runs")]) == 0
    rows = json.loads((tmp_path / "train_speed-quick.json").read_text())["rows"]
    assert [r["impl"] for r in rows] == ["reference", "rec"]
    for r in rows:
        assert COLUMNS <= set(r), COLUMNS - set(r)
        assert r["epoch_s"] > 0 and 0.0 <= r["val_ndcg@10_ep1"] <= 1.0 and 0.5 < r["val_auc"] <= 1.0  # better than random
    assert "Targets" in (tmp_path / "train_speed-quick.md").read_text() and (tmp_path / "train_speed-quick.png").is_file()


def test_reference_learns_a_walk() -> None:
    """The yardstick itself works: item i is always followed by item i+1."""
    torch.manual_seed(0)
    n, T = 30, 8
    starts = np.random.default_rng(0).integers(0, n, 256)
    seqs = (starts[:, None] + np.arange(T + 1)) % n
    inputs, targets = seqs[:, :-1].astype(np.int64), seqs[:, 1:].astype(np.int64)
    model = ReferenceSASRec(n, d=32, layers=1, heads=2, max_len=T, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = [reference_train_epoch(model, opt, inputs, targets, 64, seed=e) for e in range(15)]
    assert losses[-1] < 0.2 * losses[0]
