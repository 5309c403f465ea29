"""Popularity and uniform baselines on hand-computed cases."""

import numpy as np
import pytest

from rec.metrics import popularity_metrics, uniform_metrics


def test_popularity_ranks_by_count_ties_optimistic():
    counts = np.array([5, 1, 3, 3])
    # ranks: item0 -> 0, item2 -> 1 (item3 ties: optimistic), item1 -> 3
    m = popularity_metrics(counts, np.array([0, 2, 1]), ks=[1, 2])
    assert m["hr@1"] == pytest.approx(1 / 3) and m["hr@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 3)


def test_seeded_tie_break_never_reorders_different_counts():
    counts = np.array([0, 0, 0, 9])
    m = popularity_metrics(counts, np.array([3]), ks=[1], tie_seed=0)
    assert m["hr@1"] == 1.0
    # three zero-count items: the target's rank among them depends on the seed, never optimistic for all
    hits = [popularity_metrics(counts, np.array([0, 1, 2]), ks=[2], tie_seed=s)["hr@2"] for s in range(5)]
    assert all(h == pytest.approx(1 / 3) for h in hits)


def test_uniform_metrics_is_the_exact_expectation():
    m = uniform_metrics(20)
    assert m["hr@10"] == 0.5
    assert m["ndcg@10"] == pytest.approx(sum(1 / np.log2(r + 2) for r in range(10)) / 20)
