"""The few-shot benchmark's rows: issue 17's zero-shot-init and default rows, and the committed rows staying current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.fewshot import Context, Selection, main, plan
from bench.fewshot_config import ADAPTED, METHODS, ZERO_SHOT, load_bench_config, with_data_root
from bench.fewshot_progress import final_rows, read_progress
from rec.models.backbone import build_backbone

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"


def test_zero_shot_rows_run_once_at_k0_and_every_other_method_at_each_k():
    sel = Selection(["a"], [16, 64], [0], ["popularity", "zero-shot", "zero-shot-init", "default"])
    rows = plan(sel)
    assert {(k, m) for _, _, k, m in rows if k == 0} == {(0, "zero-shot"), (0, "zero-shot-init")}
    assert [(k, m) for _, _, k, m in rows if k != 0] == [(16, "popularity"), (16, "default"), (64, "popularity"), (64, "default")]
    # a zero-shot method alone still gets its K=0 row
    assert plan(Selection(["a"], [64], [0], ["zero-shot-init"])) == [(0, "a", 0, "zero-shot-init")]


def test_every_bench_method_maps_to_a_registered_adaptation_method():
    from rec.adaptation.registry import method_names

    assert {registered for registered, _ in ADAPTED.values()} <= set(method_names())
    assert set(ZERO_SHOT) <= set(METHODS) and set(ADAPTED) <= set(METHODS)
    assert ADAPTED["default"][0] == "item-terms"  # the shipped default: item terms with the popularity floor
    assert "zero-shot-init" in load_bench_config(BENCH / "fewshot.yaml").methods


def test_the_committed_rows_stay_current(datasets_dir):
    """Settings added to AdaptConfig after the 756 rows ran must not re-run them (ADDED_NEUTRAL, SECTION_OF)."""
    bc = with_data_root(load_bench_config(BENCH / "fewshot-2core.yaml"), str(datasets_dir))
    ctx = Context(bc, REPO / bc.runs_dir, quick=False)
    rows = final_rows(read_progress(BENCH / "results" / "fewshot_progress.jsonl"), ctx)
    old = {m: 72 for m in ("scratch-sasrec-id", "scratch-backbone", "head", "prompt", "lora", "lora-lowrank-adaptor", "full",
                           "lora-meta", "lora-tuned")} | {"popularity": 90, "zero-shot": 18}
    got = {m: sum(r["method"] == m for r in rows) for m in old}
    if Path(ctx.stage).parent.name != "bench-fewshot-2core" or ctx.pretrain_key() != "27f3a86e1d":
        pytest.fail(f"the 2-core protocol's pretraining key moved to {ctx.pretrain_key()}: every committed row would re-run")
    assert got == old


def test_settings_hashes_name_datasets_never_the_machine_path(tmp_path):
    """A clean clone with the data root elsewhere (CI) must find the committed rows current."""
    from bench.fewshot_progress import settings_hash

    keys = []
    for where in ("one", "two"):
        (tmp_path / where).mkdir()
        bc = with_data_root(load_bench_config(BENCH / "fewshot-2core.yaml"), str(tmp_path / where))
        assert all(Path(t.path).is_relative_to(tmp_path / where) for t in bc.targets)
        ctx = Context(bc, tmp_path / "runs", quick=False)
        keys.append([ctx.pretrain_key()] + [settings_hash(ctx, t, m) for t in bc.targets for m in ("lora", "popularity")])
    assert keys[0] == keys[1]


def test_zero_shot_init_is_the_seeded_untrained_init(small_backbone, tmp_path):
    bc = load_bench_config(BENCH / "fewshot-2core.yaml")
    ctx = Context(bc, tmp_path, quick=True)
    ctx._base = small_backbone  # a backbone trained for 6 epochs: its init differs from it
    init = ctx.init_backbone()
    torch.manual_seed(small_backbone.cfg.train.seed)
    want = build_backbone(small_backbone.cfg.model).state_dict()
    assert all(torch.equal(v, want[k]) for k, v in init.model.state_dict().items())
    assert not all(torch.equal(v, small_backbone.model.state_dict()[k]) for k, v in init.model.state_dict().items())
    assert init.checksum != small_backbone.checksum and init.cfg is small_backbone.cfg


@pytest.mark.slow
@pytest.mark.realdata
def test_quick_run_writes_zero_shot_and_zero_shot_init_rows(datasets_dir, tmp_path, monkeypatch):
    """``--quick`` end to end for the K=0 rows: tiny Ray Train pretraining, then both zero-shot rows."""
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("REC_DATA_ROOT", str(datasets_dir))
    rc = main(["--quick", "--config", str(BENCH / "fewshot-2core.yaml"), "--targets", "ml-100k", "--methods", "zero-shot",
               "zero-shot-init", "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")])
    assert rc == 0
    rows = json.loads((tmp_path / "results" / "fewshot-quick.json").read_text())["rows"]
    got = {r["method"]: r for r in rows}
    assert set(got) == {"zero-shot", "zero-shot-init"} and {r["k"] for r in rows} == {0}
    assert all(0.0 <= r["ndcg@10"] <= 1.0 for r in rows)
    md = (tmp_path / "results" / "fewshot-quick.md").read_text()
    assert "zero-shot / zero-shot-init" in md  # issue 17's T2 column
