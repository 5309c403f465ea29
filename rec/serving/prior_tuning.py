"""Choose a tenant's online-prior weight from its own next interactions (counterfactual, per ask).

How much a tenant's own popularity should count against the model depends on the tenant: on a
catalog whose titles say little (MovieLens, Steam) popularity beats the model and wants a large
weight; on one where the model already ranks well a large weight drowns it. A fixed weight is
wrong for one of the two (the closed-loop benchmark: 0.35-0.78x popularity on ML-100K and Steam at
weight 0.5, while Scientific and Toy were hurt by the prior).

Every weight of a small grid can be judged without showing it, because the prior is a blend of
two score vectors the replica already has at ask time:

1. **Probe** (serving, :func:`probe_top_rows`): with ``prior_weight_grid`` set, an ask records
   in its impression, per grid weight, the top ``k`` catalog rows the blend would rank at that
   weight (``prior_probe``, item ids; the shown slate is not affected). With
   ``transition_weight_grid`` too, the grid is every (prior weight, transition weight) pair and
   the blend also adds the item-to-item prior (``rec.serving.online_transitions``).
2. **Judge** (replay, :class:`PriorWeightTuner`): the user's next ask reports its newest
   interaction (``history_last``). If it differs from the one the earlier ask reported, it is the
   next thing the user did, and each grid weight scores a hit if its probed top ``k`` held it.
3. **Choose**: the weight with the most decayed hits (``decay`` per judged interaction, so the
   choice follows the prior as it fills up) once ``min_evidence`` interactions have been judged;
   ties and anything before that keep the configured ``prior_weight``.

Both sides read only the log, so every replica computes the same weight, and a restarted
replica recomputes it by replay (``rec.serving.live_feedback``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

__all__ = ["PROBE_KEY", "Entry", "PriorWeightTuner", "entry_pair", "probe_top_rows"]

#: Key of the probe in an impression record: ``{"weights": [w...], "top": [[item id...] per weight]}``
PROBE_KEY = "prior_probe"


#: A grid entry: a prior weight, or a (prior weight, transition weight) pair when the tenant also
#: tunes its item-to-item prior (``rec.serving.online_transitions``)
Entry = float | tuple[float, float]


def entry_pair(w: Entry | list[float]) -> tuple[float, float]:
    """``(prior weight, transition weight)`` of a grid entry (a bare weight has transition weight 0)."""
    if isinstance(w, (tuple, list)):
        if len(w) != 2:
            raise ValueError(f"a grid entry is a weight or a (prior, transition) pair, got {w!r}")
        return float(w[0]), float(w[1])
    return float(w), 0.0


def probe_top_rows(model_z: np.ndarray, prior_pop: np.ndarray, weights: Sequence[Entry], k: int,
                   exclude: np.ndarray | None = None, successors: np.ndarray | None = None) -> list[np.ndarray]:
    """Top ``k`` rows of ``model_z + w_p * prior_pop + w_t * successors`` for each grid entry, best first.

    Args:
        model_z: ``(N,)`` standardised model scores (what :meth:`OnlinePrior.blend` adds to).
        prior_pop: ``(N,)`` ``log1p`` of the decayed event counts.
        weights: Grid entries: ``w_p``, or ``(w_p, w_t)`` pairs (each >= 0).
        k: Rows per entry.
        exclude: Rows never returned (the ask's excluded history / non-candidates).
        successors: ``(N,)`` ``log1p`` successor counts of the ask's newest item
            (:meth:`OnlineTransitions.dense`); None = no transition term.
    """
    n = len(model_z)
    mask = np.zeros(n, bool)
    if exclude is not None and len(exclude):
        mask[np.asarray(exclude, np.int64)] = True
    k = min(k, int(n - mask.sum()))
    out = []
    for w in weights:
        wp, wt = entry_pair(w)
        s = np.asarray(model_z, np.float64) + wp * prior_pop
        if successors is not None and wt:
            s = s + wt * successors
        s[mask] = -np.inf
        if k <= 0:
            out.append(np.zeros(0, np.int64))
            continue
        part = np.argpartition(-s, k - 1)[:k]
        out.append(part[np.argsort(-s[part], kind="stable")].astype(np.int64))
    return out


class PriorWeightTuner:
    """Decayed hit counts of each grid entry on users' next interactions (see module doc).

    Args:
        weights: The grid (at least two entries): prior weights, or ``(prior, transition)`` weight
            pairs (each >= 0). It is written as is into every probe, so a probe of another grid is
            never judged against this one.
        default: The configured entry: used until ``min_evidence`` judgements and on ties.
        min_evidence: Judged interactions before the choice may leave ``default``.
        decay: Each judgement multiplies earlier hit counts by this (0 < decay <= 1).
        max_users: Users whose last probe is remembered (oldest forgotten first).
    """

    def __init__(self, weights: Sequence[Entry], default: Entry, min_evidence: int = 30, decay: float = 0.995,
                 max_users: int = 100_000) -> None:
        pairs = [entry_pair(w) for w in weights]
        if len(pairs) < 2 or min(min(p) for p in pairs) < 0:
            raise ValueError(f"prior weight grid needs >= 2 weights, each >= 0; got {list(weights)}")
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        paired = any(isinstance(w, (tuple, list)) for w in weights)
        self.weights: list = [list(p) for p in pairs] if paired else [p[0] for p in pairs]  # as probes carry them
        self.entries = pairs
        self.default = entry_pair(default)
        self.min_evidence = int(min_evidence)
        self.decay = float(decay)
        self.hits = np.zeros(len(pairs))
        self.judged = 0
        self._last: OrderedDict[str, tuple[str | None, dict[str, int]]] = OrderedDict()  # user -> (history_last, item -> weights bitmask)
        self._max_users = max_users

    def observe_ask(self, user: str, history_last: str | None, probe: dict | None) -> None:
        """Judge the user's previous probe on this ask's newest interaction, then remember this probe."""
        prev = self._last.get(user)
        if prev is not None and history_last is not None and history_last != prev[0]:
            self.judge(prev[1].get(history_last, 0))
        top = _probe_hits(probe, self.weights) if probe is not None else None
        if top is None:
            self._last.pop(user, None)
            return
        self._last[user] = (history_last, top)
        self._last.move_to_end(user)
        if len(self._last) > self._max_users:
            self._last.popitem(last=False)

    def judge(self, mask: int) -> None:
        """One judged interaction: grid entry ``j`` held it iff bit ``j`` of ``mask`` is set."""
        self.hits *= self.decay
        for j in range(len(self.weights)):
            if mask >> j & 1:
                self.hits[j] += 1.0
        self.judged += 1

    @property
    def entry(self) -> tuple[float, float]:
        """The ``(prior weight, transition weight)`` to blend with now."""
        if self.judged < self.min_evidence or self.hits.max() <= 0:
            return self.default
        best = np.flatnonzero(self.hits >= self.hits.max() - 1e-9)
        if any(self.entries[j] == self.default for j in best):
            return self.default
        return self.entries[int(min(best, key=lambda j: sum(abs(a - b) for a, b in zip(self.entries[j], self.default))))]

    @property
    def weight(self) -> float:
        """The prior weight to blend with now."""
        return self.entry[0]


def _grid_key(weights: Sequence) -> tuple:
    """A grid as comparable values: each entry's pair and whether it was written as a pair."""
    return tuple((*entry_pair(w), isinstance(w, (tuple, list))) for w in weights)


def _probe_hits(probe: dict, weights: Sequence) -> dict[str, int] | None:
    """``item id -> bitmask of the grid entries whose top held it``; None if the probe is of another grid."""
    try:
        same = _grid_key(probe["weights"]) == _grid_key(weights)
        tops = probe["top"]
    except (KeyError, TypeError, ValueError):
        return None
    if not same or len(tops) != len(weights):
        return None
    out: dict[str, int] = {}
    for j, items in enumerate(tops):
        for item in items:
            out[str(item)] = out.get(str(item), 0) | (1 << j)
    return out
