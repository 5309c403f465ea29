"""bench/closed_loop_headroom.py's replay arithmetic: each signal learns only from the steps before,
the union bound bounds the three lists, and the tuned blend learns a pattern the model misses."""

from __future__ import annotations

import numpy as np

from bench.closed_loop_headroom import SIGNALS, online_hits


def _replay(users: int, n: int = 40):
    """User after user takes 0 -> 1 -> 2; the model always ranks item 1 last (never in its top 10)."""
    histories = [list(range(step)) for _ in range(users) for step in range(3)]
    targets = [step for _ in range(users) for step in range(3)]
    rng = np.random.default_rng(0)

    def scores():
        for i, h in enumerate(histories):
            row = rng.normal(size=n)
            row[1] = -50.0
            row[h] = -np.inf
            yield i, row

    return histories, targets, scores(), n


def test_signals_learn_from_the_past_only_and_the_bound_holds():
    histories, targets, scores, n = _replay(users=60)
    hits = online_hits(histories, targets, scores, n)
    assert set(hits) == set(SIGNALS)
    takes_1 = np.array(targets) == 1
    assert not hits["static"][takes_1].any()  # item 1 is never in the model's top 10
    first, later = np.flatnonzero(takes_1)[0], np.flatnonzero(takes_1)[1:]
    assert not hits["transitions"][first]  # nobody had gone 0 -> 1 before the first user
    assert hits["transitions"][later].all()  # the first user's next ask revealed it for everyone after
    for s in ("static", "popularity", "transitions"):
        assert (hits[s] <= hits["union-bound"]).all(), s
    # tuned online, the blend leaves the model-only default once 30 steps were judged, then holds item 1
    assert hits["blend-pop+transitions"][later[-20:]].all()
    assert hits["blend-pop+transitions"].sum() > hits["static"].sum()
