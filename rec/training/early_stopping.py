"""Early stopping on a validation metric, keeping the best epoch's weights.

One helper for every loop that early-stops: tenant adaptation, the from-scratch baselines and Ray
Train pretraining (whose workers checkpoint its counters and weights, so a restarted worker resumes
them: :meth:`EarlyStopping.counters` / :meth:`EarlyStopping.resume`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Keep the weights of the best validation epoch and stop after ``patience`` epochs without a gain.

    The starting weights count as epoch -1: if no epoch beats them, :meth:`restore` puts them back.
    A tie is no gain.

    Args:
        model: Its current weights are the starting candidate.
        start: Validation metrics of the starting weights (``{metric: -1.0}`` when any epoch should win).
        patience: Epochs without a gain before :meth:`update` says stop.
        metric: The key of the metric dicts that decides.
    """

    def __init__(self, model: nn.Module, start: dict[str, float], patience: int, metric: str = "ndcg@10") -> None:
        self.best, self.best_epoch, self.bad = start, -1, 0
        self.patience, self.metric = patience, metric
        self._weights = _snapshot(model)

    def update(self, epoch: int, val: dict[str, float], model: nn.Module) -> bool:
        """Record ``epoch``'s validation metrics; True when training should stop."""
        if val[self.metric] > self.best[self.metric]:
            self.best, self.best_epoch, self.bad = val, epoch, 0
            self._weights = _snapshot(model)
            return False
        self.bad += 1
        return self.stopped

    @property
    def stopped(self) -> bool:
        """True once ``patience`` epochs in a row brought no gain."""
        return self.bad >= self.patience

    @property
    def best_weights(self) -> dict[str, torch.Tensor]:
        """The kept weights (the start if no epoch improved); detached copies."""
        return self._weights

    def restore(self, model: nn.Module) -> None:
        """Load the best weights seen (the start if no epoch improved) into ``model``."""
        model.load_state_dict(self._weights)

    def counters(self) -> dict[str, Any]:
        """JSON-safe counters for a checkpoint: best score, best epoch, epochs without a gain."""
        return {"best": float(self.best[self.metric]), "best_epoch": self.best_epoch, "bad_epochs": self.bad}

    def resume(self, weights: dict[str, torch.Tensor], counters: dict[str, Any]) -> None:
        """Continue from a checkpoint: the kept ``weights`` and :meth:`counters` saved with them."""
        self._weights = weights
        self.best = {self.metric: float(counters["best"])}
        self.best_epoch, self.bad = int(counters["best_epoch"]), int(counters["bad_epochs"])


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
