"""The backbone benchmark's two protocols (issue 16): history kept (the issue's) and history
excluded (SASRec+'s published numbers), and the target checks that name which is which."""

from __future__ import annotations

import numpy as np

from bench.backbone import parse_args, popularity_batches, target_checks, rank_both_ways
from rec.config import TenantSource
from rec.data.loaders import load_source
from rec.metrics import popularity_metrics
from rec.training.corpus import tenant_corpus


def test_popularity_ranked_both_ways_matches_the_library_and_excluding_history_only_helps(datasets_dir):
    tenant = load_source(TenantSource(format="movielens-100k", path=str(datasets_dir / "ml-100k"), max_users=80, seed=0))
    tc = tenant_corpus(tenant, None, 0, 10, max_eval_users=None, seed=0)
    rows = tc.test
    kept, excl = rank_both_ways(popularity_batches(tc.item_popularity, len(rows.targets), batch=7), rows,
                              rows.seen_items(slice(None)), tc.num_items)
    lib = popularity_metrics(tc.item_popularity, rows.targets, ks=[10, 20])
    for k in ("ndcg@10", "hr@10", "ndcg@20", "recall@20"):
        assert abs(kept[k] - lib[k]) < 1e-9
        assert excl[f"{k}_hist_excl"] >= kept[k]
    # ML-100K users rate the most popular films early: excluding them lifts popularity a lot
    assert excl["ndcg@10_hist_excl"] > 1.5 * kept["ndcg@10"]


def _row(dataset: str, model: str, kept: float, excl: float | None = None) -> dict:
    return {"dataset": dataset, "model": model, "ndcg@10": kept, **({} if excl is None else {"ndcg@10_hist_excl": excl})}


def test_target_checks_judge_sasrec_plus_under_both_protocols_and_vq_rec_under_its_own():
    rows = [_row("ml-1m", "sasrec-id", 0.12, 0.18), _row("ml-1m", "fewshot-rec", 0.118, 0.17),
            _row("scientific", "sasrec-id", 0.05, 0.07), _row("scientific", "fewshot-rec", 0.066, 0.09)]
    text = target_checks(rows)
    sasrec = next(line for line in text.splitlines() if line.startswith("- ml-1m: sasrec-id"))
    assert "kept 0.1200 = 65% **not met**" in sasrec and "excl 0.1800 = 97% **met**" in sasrec
    ml = next(line for line in text.splitlines() if line.startswith("- ml-1m: fewshot-rec vs"))
    assert "kept 0.1180 vs 0.1200 (0.98x) **met**" in ml and "excl 0.1700 vs 0.1800 (0.94x) **not met**" in ml
    vq = next(line for line in text.splitlines() if "scientific: fewshot-rec NDCG@10 (kept" in line)
    assert vq.endswith("0.0660 vs VQ-Rec 0.0645: **met**") and "0.09" not in vq and "standard errors" not in vq
    # rows saved before the excluded protocol existed are judged on what they have
    old = target_checks([_row("beauty", "sasrec-id", 0.04), _row("beauty", "fewshot-rec", 0.044, 0.05)])
    assert "kept 0.0440 vs 0.0400 (1.10x) **met**" in old and "excl" not in old.split("\n")[2]


def test_a_quick_run_keeps_its_checkpoints_apart_from_the_full_runs():
    assert parse_args(["--quick"]).runs_dir.name == "bench-backbone-quick"
    assert parse_args([]).runs_dir.name == "bench-backbone"


def test_set_overrides_reach_the_run_config_and_a_bad_one_exits_with_the_fix(capsys):
    import pytest

    from bench.backbone import DATASETS, run_config

    args = parse_args(["--set", "train.patience=20", "--set", "train.lr_decay=0.5"])
    cfg = run_config(DATASETS["ml-1m"], "sasrec-id", args)
    assert cfg.train.patience == 20 and cfg.train.lr_decay == 0.5 and not cfg.model.use_text
    with pytest.raises(SystemExit) as e:
        parse_args(["--set", "train.patience"])
    assert e.value.code == 2 and "write KEY=VALUE" in capsys.readouterr().err


def test_merging_replaces_only_this_runs_dataset_model_rows(tmp_path):
    import json

    from bench.backbone import merge_saved

    key = "setting (identical for sasrec-id and fewshot-rec)"
    saved = {"rows": [_row("ml-1m", "popularity", 0.01), _row("ml-1m", "sasrec-id", 0.10), _row("ml-1m", "fewshot-rec", 0.09),
                      _row("beauty", "sasrec-id", 0.04)],
             "protocol": {key: {"ml-1m": {"train.patience": 10}, "beauty": {}}, "total_wall_s": 5.0}}
    (tmp_path / "b.json").write_text(json.dumps(saved))
    (tmp_path / "b_curves.json").write_text(json.dumps({"curves": {"ml-1m": {"sasrec-id": [[0, 0.1]], "fewshot-rec": [[0, 0.09]]}}}))
    ours = [_row("ml-1m", "sasrec-id", 0.12)]
    proto = {key: {"ml-1m": {"train.patience": 10, "sasrec-id --set": ["train.patience=20"]}}, "total_wall_s": 1.0}
    rows, curves, protocol = merge_saved(tmp_path, "b", ours, {"ml-1m": {"sasrec-id": [[0, 0.12]]}}, proto)
    assert [(r["dataset"], r["model"], r["ndcg@10"]) for r in rows] == [
        ("ml-1m", "popularity", 0.01), ("ml-1m", "sasrec-id", 0.12), ("ml-1m", "fewshot-rec", 0.09), ("beauty", "sasrec-id", 0.04)]
    assert curves["ml-1m"] == {"sasrec-id": [[0, 0.12]], "fewshot-rec": [[0, 0.09]]}
    assert protocol[key]["ml-1m"]["sasrec-id --set"] == ["train.patience=20"] and protocol["total_wall_s"] == 6.0


def test_rescore_or_report_without_saved_results_exits_with_what_to_run(tmp_path):
    import pytest

    from bench.backbone import main

    for flag in ("--rescore", "--report-only"):
        with pytest.raises(SystemExit, match="run the benchmark first"):
            main([flag, "--datasets", "scientific", "--results-dir", str(tmp_path)])
