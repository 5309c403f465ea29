"""An online item-to-item prior: which item a tenant's users take after which, learned from its live log.

A text-only zero-shot model knows an item's title, not that a stapler's refills follow it or that
the second season follows the first. Those are transitions: for a user whose interactions are
``a`` then ``b``, the pair ``a -> b``. :class:`OnlineTransitions` counts them per tenant from what
the log reports (a user's consecutive interactions: clicks, and with ``count_history`` each ask's
newest history item), and :meth:`OnlineTransitions.dense` gives, for the item a user took last,
``log1p`` of each item's successor count: the term ``transition_weight * log1p(count(last -> i))``
that :class:`rec.serving.live_feedback.TenantFeedback` adds to the blend.

Counts do not decay (which item follows which is a property of the catalog more than of the week);
memory is bounded by ``max_sources`` source items, least recently updated forgotten first.
Measured offline on the closed-loop replay (``bench/closed_loop_headroom.py``).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

__all__ = ["OnlineTransitions"]


class OnlineTransitions:
    """Successor counts ``a -> b`` over a catalog of ``num_items`` rows.

    Args:
        num_items: Catalog rows.
        max_sources: Source items remembered (least recently updated forgotten first).
    """

    def __init__(self, num_items: int, max_sources: int = 100_000) -> None:
        if num_items < 1 or max_sources < 1:
            raise ValueError(f"num_items and max_sources must be >= 1, got {num_items}, {max_sources}")
        self.num_items = num_items
        self._succ: OrderedDict[int, dict[int, float]] = OrderedDict()
        self._max_sources = max_sources
        self.total = 0.0

    def observe(self, prev_row: int, next_row: int, amount: float = 1.0) -> None:
        """Count one user going from ``prev_row`` to ``next_row`` (a repeat of the same item is not a transition)."""
        prev_row, next_row = int(prev_row), int(next_row)
        if prev_row == next_row:
            return
        for r in (prev_row, next_row):
            if not 0 <= r < self.num_items:
                raise ValueError(f"row {r} outside the catalog of {self.num_items} items")
        succ = self._succ.setdefault(prev_row, {})
        succ[next_row] = succ.get(next_row, 0.0) + amount
        self._succ.move_to_end(prev_row)
        self.total += amount
        if len(self._succ) > self._max_sources:
            _, dropped = self._succ.popitem(last=False)
            self.total -= sum(dropped.values())

    def successors(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, counts)`` of the items taken after ``row``, most frequent first (ties: lower row)."""
        succ = self._succ.get(int(row))
        if not succ:
            return np.zeros(0, np.int64), np.zeros(0)
        rows = np.fromiter(succ.keys(), np.int64, len(succ))
        counts = np.fromiter(succ.values(), np.float64, len(succ))
        order = np.lexsort((rows, -counts))
        return rows[order], counts[order]

    def dense(self, row: int) -> np.ndarray:
        """``(num_items,)`` ``log1p`` of the successor counts of ``row`` (zeros where none)."""
        out = np.zeros(self.num_items)
        rows, counts = self.successors(row)
        out[rows] = np.log1p(counts)
        return out
