"""Learning rate decay on a validation plateau (``train.lr_decay``), resumable with the run.

torch's ``ReduceLROnPlateau`` on the same metric early stopping watches: after
``train.lr_decay_patience`` epochs without a gain every learning rate is multiplied by
``train.lr_decay`` (never below ``train.min_lr``). Its counters travel in the checkpoint's JSON
state, so a restarted worker decays exactly where an uninterrupted run would. A run resumed from
a checkpoint written without the schedule (a constant-rate run continued with ``train.lr_decay``
set) starts the plateau from early stopping's own counters: its best score and its epochs
without a gain.
"""

from __future__ import annotations

from typing import Any

import torch

from rec.config import TrainConfig

__all__ = ["plateau_scheduler", "current_lr", "STATE_KEY"]

#: where the scheduler's state lives in the per-epoch checkpoint state
STATE_KEY = "lr_scheduler"


def plateau_scheduler(
    optimizer: torch.optim.Optimizer, tc: TrainConfig, state: dict[str, Any]
) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The run's plateau scheduler (None with ``train.lr_decay`` unset), restored from ``state``.

    ``state`` is the training loop's checkpointed state: ``state[STATE_KEY]`` when the run already
    had a scheduler, else early stopping's ``best`` and ``bad_epochs`` seed the plateau.
    """
    if tc.lr_decay is None:
        return None
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        # threshold 0: any gain counts, as in early stopping (a tie is no gain); eps 0: min_lr is the only floor
        optimizer, mode="max", factor=tc.lr_decay, patience=tc.lr_decay_patience, threshold=0.0, min_lr=tc.min_lr, eps=0.0
    )
    saved = state.get(STATE_KEY)
    if saved is not None:
        sched.load_state_dict(saved)
    elif state.get("epoch", -1) >= 0:
        sched.best, sched.num_bad_epochs = float(state["best"]), int(state["bad_epochs"])
    return sched


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The first parameter group's learning rate (the backbone's)."""
    return float(optimizer.param_groups[0]["lr"])
