"""``train.lr_decay``: the plateau scheduler's counters survive the checkpoint's JSON, its settings
come from the config, and a run continued from a constant-rate checkpoint starts its plateau from
early stopping's counters."""

from __future__ import annotations

import json

import pytest
import torch

from rec.config import TrainConfig
from rec.training.lr_schedule import STATE_KEY, current_lr, plateau_counters, plateau_scheduler

FRESH = {"epoch": -1, "best": -1.0, "bad_epochs": 0}  # what the training loop's state holds before epoch 1


def _opt(lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def test_unset_is_a_constant_rate():
    assert plateau_scheduler(_opt(), TrainConfig(), FRESH) is None


def test_state_round_trips_through_json_and_decays_at_the_same_epoch():
    tc = TrainConfig(lr_decay=0.5, lr_decay_patience=2, patience=5, min_lr=1e-4)
    straight_opt = _opt()
    straight = plateau_scheduler(straight_opt, tc, FRESH)
    for score in (0.1, 0.2, 0.2):  # a gain, then one plateau epoch
        straight.step(score)
    saved = json.loads(json.dumps(plateau_counters(straight), allow_nan=False))  # what the checkpoint keeps: strict JSON
    resumed_opt = _opt()
    resumed = plateau_scheduler(resumed_opt, tc, {"epoch": 2, STATE_KEY: saved, "best": 0.2, "bad_epochs": 1})
    for sched, opt in ((straight, straight_opt), (resumed, resumed_opt)):
        sched.step(0.2)  # 2nd plateau epoch: not yet
        assert current_lr(opt) == pytest.approx(1e-3)
        sched.step(0.19)  # 3rd: decay
        assert current_lr(opt) == pytest.approx(5e-4)
        for _ in range(9):  # long plateau: floored at min_lr
            sched.step(0.1)
        assert current_lr(opt) == pytest.approx(1e-4)


def test_a_constant_rate_checkpoint_continues_from_early_stoppings_counters():
    tc = TrainConfig(lr_decay=0.5, lr_decay_patience=2, patience=20)
    opt = _opt()
    sched = plateau_scheduler(opt, tc, {"epoch": 55, "best": 0.1094, "bad_epochs": 10})
    sched.step(0.108)  # already 10 epochs without a gain: the first plateau epoch decays
    assert current_lr(opt) == pytest.approx(5e-4)
    sched.step(0.110)  # a gain over early stopping's best resets the count
    sched.step(0.109)
    sched.step(0.109)
    assert current_lr(opt) == pytest.approx(5e-4)


def test_a_resumed_run_takes_its_decay_settings_from_the_config_not_the_checkpoint():
    first = TrainConfig(lr_decay=0.5, lr_decay_patience=1, patience=5)
    sched = plateau_scheduler(_opt(), first, FRESH)
    sched.step(0.2)
    saved = plateau_counters(sched)
    opt = _opt()
    resumed = plateau_scheduler(opt, TrainConfig(lr_decay=0.1, lr_decay_patience=1, patience=5), {STATE_KEY: saved})
    resumed.step(0.1)
    resumed.step(0.1)  # 2nd flat epoch > patience 1: decay by the new factor
    assert current_lr(opt) == pytest.approx(1e-4)
