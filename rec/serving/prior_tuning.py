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
   weight (``prior_probe``, item ids; the shown slate is not affected).
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

__all__ = ["PROBE_KEY", "PriorWeightTuner", "probe_top_rows"]

#: Key of the probe in an impression record: ``{"weights": [w...], "top": [[item id...] per weight]}``
PROBE_KEY = "prior_probe"


def probe_top_rows(model_z: np.ndarray, prior_pop: np.ndarray, weights: Sequence[float], k: int,
                   exclude: np.ndarray | None = None) -> list[np.ndarray]:
    """Top ``k`` rows of ``model_z + w * prior_pop`` for each ``w`` in ``weights``, best first.

    Args:
        model_z: ``(N,)`` standardised model scores (what :meth:`OnlinePrior.blend` adds to).
        prior_pop: ``(N,)`` ``log1p`` of the decayed event counts.
        weights: Grid of blend weights (>= 0).
        k: Rows per weight.
        exclude: Rows never returned (the ask's excluded history / non-candidates).
    """
    n = len(model_z)
    mask = np.zeros(n, bool)
    if exclude is not None and len(exclude):
        mask[np.asarray(exclude, np.int64)] = True
    k = min(k, int(n - mask.sum()))
    out = []
    for w in weights:
        s = np.asarray(model_z, np.float64) + float(w) * prior_pop
        s[mask] = -np.inf
        if k <= 0:
            out.append(np.zeros(0, np.int64))
            continue
        part = np.argpartition(-s, k - 1)[:k]
        out.append(part[np.argsort(-s[part], kind="stable")].astype(np.int64))
    return out


class PriorWeightTuner:
    """Decayed hit counts of each grid weight on users' next interactions (see module doc).

    Args:
        weights: The grid (each >= 0, at least two).
        default: The configured weight: used until ``min_evidence`` judgements and on ties.
        min_evidence: Judged interactions before the choice may leave ``default``.
        decay: Each judgement multiplies earlier hit counts by this (0 < decay <= 1).
        max_users: Users whose last probe is remembered (oldest forgotten first).
    """

    def __init__(self, weights: Sequence[float], default: float, min_evidence: int = 30, decay: float = 0.995,
                 max_users: int = 100_000) -> None:
        if len(weights) < 2 or min(weights) < 0:
            raise ValueError(f"prior weight grid needs >= 2 weights, each >= 0; got {list(weights)}")
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self.weights = [float(w) for w in weights]
        self.default = float(default)
        self.min_evidence = int(min_evidence)
        self.decay = float(decay)
        self.hits = np.zeros(len(self.weights))
        self.judged = 0
        self._last: OrderedDict[str, tuple[str | None, dict[str, int]]] = OrderedDict()  # user -> (history_last, item -> weights bitmask)
        self._max_users = max_users

    def observe_ask(self, user: str, history_last: str | None, probe: dict | None) -> None:
        """Judge the user's previous probe on this ask's newest interaction, then remember this probe."""
        prev = self._last.get(user)
        if prev is not None and history_last is not None and history_last != prev[0]:
            self._judge(prev[1].get(history_last, 0))
        top = _probe_hits(probe, self.weights) if probe is not None else None
        if top is None:
            self._last.pop(user, None)
            return
        self._last[user] = (history_last, top)
        self._last.move_to_end(user)
        if len(self._last) > self._max_users:
            self._last.popitem(last=False)

    def _judge(self, mask: int) -> None:
        self.hits *= self.decay
        for j in range(len(self.weights)):
            if mask >> j & 1:
                self.hits[j] += 1.0
        self.judged += 1

    @property
    def weight(self) -> float:
        """The weight to blend with now."""
        if self.judged < self.min_evidence or self.hits.max() <= 0:
            return self.default
        best = np.flatnonzero(self.hits >= self.hits.max() - 1e-9)
        if any(self.weights[j] == self.default for j in best):
            return self.default
        return self.weights[int(min(best, key=lambda j: abs(self.weights[j] - self.default)))]


def _probe_hits(probe: dict, weights: list[float]) -> dict[str, int] | None:
    """``item id -> bitmask of the grid weights whose top held it``; None if the probe is of another grid."""
    try:
        ws = [float(w) for w in probe["weights"]]
        tops = probe["top"]
    except (KeyError, TypeError, ValueError):
        return None
    if ws != weights or len(tops) != len(ws):
        return None
    out: dict[str, int] = {}
    for j, items in enumerate(tops):
        for item in items:
            out[str(item)] = out.get(str(item), 0) | (1 << j)
    return out
