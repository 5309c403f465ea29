"""An online popularity/recency prior learned from a tenant's live events, blended into scores.

A text-only model knows nothing of what a tenant's users actually pick. This prior counts
clicks and purchases per catalog row with exponential time decay (half-life ``half_life_s``),
and :meth:`OnlinePrior.blend` adds ``weight * log1p(counts)`` to the model's standardised scores:
``weight`` is how many model standard deviations an e-fold of (decayed) events is worth. With no
events the blend is the model's ranking unchanged; as events arrive the tenant's own popularity
takes over where the titles carry little signal, smoothly (one click moves an item by
``0.69 * weight``, not to the top).

Decay is applied lazily: counts are stored relative to a reference time and rescaled on read,
so an update is O(items in the event) and a read O(catalog).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["OnlinePrior"]


@dataclass
class OnlinePrior:
    """Decayed event counts of one tenant's catalog rows.

    Args:
        num_items: catalog size.
        half_life_s: an event's weight halves every ``half_life_s`` seconds (> 0).
        weight: blend weight of the prior against the model's standardised scores (>= 0).
    """

    num_items: int
    half_life_s: float = 7 * 24 * 3600.0
    weight: float = 1.0
    _counts: np.ndarray = field(init=False, repr=False)
    _t_ref: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {self.num_items}")
        if not self.half_life_s > 0:
            raise ValueError(f"half_life_s must be > 0, got {self.half_life_s}")
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        self._counts = np.zeros(self.num_items)

    def _decay(self, dt: float) -> float:
        return math.exp(-math.log(2.0) * dt / self.half_life_s)

    def observe(self, rows: np.ndarray, t: float, amount: float = 1.0) -> None:
        """Count an event on ``rows`` at time ``t`` (seconds; events may arrive out of order)."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_items):
            raise ValueError(f"rows must lie in [0, {self.num_items}): the event is not from this catalog")
        if t > self._t_ref:  # move the reference forward so stored counts stay O(1)
            self._counts *= self._decay(t - self._t_ref)
            self._t_ref = t
        np.add.at(self._counts, rows, amount * self._decay(self._t_ref - t))

    def counts(self, t: float) -> np.ndarray:
        """``(num_items,)`` decayed counts as seen at time ``t``."""
        return self._counts * self._decay(max(0.0, t - self._t_ref))

    @property
    def total(self) -> float:
        return float(self._counts.sum())

    def blend(self, scores: np.ndarray, rows: np.ndarray, t: float) -> np.ndarray:
        """Model ``scores`` of catalog ``rows``, standardised, plus ``weight * log1p(counts)``.

        Returns the scores unchanged (as float64) while no event has been observed.
        """
        scores = np.asarray(scores, np.float64)
        if self.total == 0 or self.weight == 0:
            return scores
        z, pop = self.parts(scores, rows, t)
        return z + self.weight * pop

    def parts(self, scores: np.ndarray, rows: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """The two terms :meth:`blend` adds: standardised ``scores`` and ``log1p`` counts of ``rows``."""
        pop = np.log1p(self.counts(t)[np.asarray(rows, np.int64)])
        return _standardise(np.asarray(scores, np.float64)), pop


def _standardise(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / (std if std > 0 else 1.0)
