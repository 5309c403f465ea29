"""Impressions joined to clicks, and candidate-policy propensities from logged model ranks."""

from __future__ import annotations

import numpy as np
import pytest

from rec.feedback.logged import logged_slates, parse_target, target_propensities
from rec.feedback.ope import estimate_slates
from rec.serving.policies import PolicyConfig, choose

CANDS, K = 20, 5


def _log(n: int, seed: int, eps: float = 0.3):
    """A log the way the service writes it: epsilon slates over ranked candidates, a click when
    the user's relevant item (rank-decaying) is shown; some answers never get feedback."""
    rng = np.random.default_rng(seed)
    rel_p = 1.0 / np.arange(1, CANDS + 1)
    rel_p /= rel_p.sum()
    items = np.array([f"i{j}" for j in range(CANDS)])
    cfg = PolicyConfig("epsilon", epsilon=eps)
    records = []
    for i in range(n):
        s = choose(np.arange(CANDS), np.linspace(1, 0, CANDS), None, K, cfg, None, rng)
        rid = f"r{i}"
        records.append({"kind": "impression", "request_id": rid, "items": items[s.rows].tolist(),
                        "propensities": s.propensities.tolist(), "model_rank": (s.rows + 1).tolist(), "policy": "epsilon"})
        relevant = rng.choice(CANDS, p=rel_p)
        if relevant in s.rows:
            records.append({"kind": "event", "type": "click", "item_id": items[relevant], "request_id": rid})
    records.append({"kind": "event", "type": "click", "item_id": "i0"})  # no request_id: not joined
    return records, rel_p


def test_joined_log_estimates_greedy_and_epsilon_targets():
    records, rel_p = _log(6000, seed=1)
    slates = logged_slates(records, candidates=CANDS)
    assert slates.n == 6000 and slates.policies == ("epsilon",)
    truth_greedy = rel_p[:K].sum()
    q = target_propensities(slates, "greedy")
    assert ((q == 0) | (q == 1)).all()
    est = estimate_slates("snips", slates.rewards, slates.propensities, q)
    assert abs(est.value - truth_greedy) / truth_greedy < 0.05 and est.ci_low < truth_greedy < est.ci_high
    # epsilon 0.1 as a target: (1 - e) greedy + e * uniform slates (each position shows a random candidate)
    truth_eps = 0.9 * truth_greedy + 0.1 * K / CANDS
    est = estimate_slates("ips", slates.rewards, slates.propensities, target_propensities(slates, "epsilon:0.1"))
    assert abs(est.value - truth_eps) / truth_eps < 0.05


def test_duplicate_impressions_count_once_and_bad_inputs_are_named():
    records, _ = _log(50, seed=2)
    assert logged_slates(records + records[:3]).n == 50
    with pytest.raises(ValueError, match="no impression records"):
        logged_slates([{"kind": "event", "type": "click", "item_id": "x"}])
    with pytest.raises(ValueError, match="greedy, epsilon"):
        parse_target("thompson")
    assert parse_target("epsilon:0.25") == ("epsilon", 0.25)
