"""Learning rate decay on a validation plateau (``train.lr_decay``), resumable with the run.

torch's ``ReduceLROnPlateau`` on the same metric early stopping watches: after
``train.lr_decay_patience`` epochs without a gain every learning rate is multiplied by
``train.lr_decay`` (never below ``train.min_lr``). Only its counters travel in the checkpoint's
JSON state (:func:`plateau_counters`); its settings always come from the config, so a resumed run
decays where an uninterrupted one would and a changed ``train.lr_decay*`` takes effect. A run
without saved counters (fresh, or a constant-rate checkpoint continued with ``train.lr_decay``
set) starts the plateau from early stopping's own: its best score and its epochs without a gain.
"""

from __future__ import annotations

from typing import Any

import torch

from rec.config import TrainConfig

__all__ = ["plateau_scheduler", "plateau_counters", "current_lr", "STATE_KEY"]

#: where the scheduler's counters live in the per-epoch checkpoint state
STATE_KEY = "lr_scheduler"
_COUNTERS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch")


def plateau_scheduler(
    optimizer: torch.optim.Optimizer, tc: TrainConfig, state: dict[str, Any]
) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The run's plateau scheduler (None with ``train.lr_decay`` unset), its counters from ``state``.

    ``state`` is the training loop's checkpointed state: ``state[STATE_KEY]`` when the run already
    had a scheduler, else early stopping's ``best`` and ``bad_epochs``.
    """
    if tc.lr_decay is None:
        return None
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        # threshold 0: any gain counts, as in early stopping (a tie is no gain); eps 0: min_lr is the only floor
        optimizer, mode="max", factor=tc.lr_decay, patience=tc.lr_decay_patience, threshold=0.0, min_lr=tc.min_lr, eps=0.0
    )
    saved = state.get(STATE_KEY) or {"best": float(state["best"]), "num_bad_epochs": int(state["bad_epochs"])}
    for key, value in saved.items():
        setattr(sched, key, value)
    return sched


def plateau_counters(sched: torch.optim.lr_scheduler.ReduceLROnPlateau) -> dict[str, Any]:
    """What a checkpoint keeps of the scheduler (JSON-safe: the best score is a real number once stepped)."""
    return {key: getattr(sched, key) for key in _COUNTERS}


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The first parameter group's learning rate (the backbone's)."""
    return float(optimizer.param_groups[0]["lr"])
