"""Ranking metrics on hand-computed arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rec.metrics import (
    auc,
    hit_rate_at_k,
    metrics_from_ranks,
    mrr_at_k,
    ndcg_at_k,
    rank_of_target,
    recall_at_k,
    sampled_metrics_from_ranks,
    sampled_rank_of_target,
)


def test_rank_and_metrics_single_row():
    scores = np.array([[0.1, 0.9, 0.5, 0.3]])
    ranks = rank_of_target(scores, np.array([2]))
    assert ranks.tolist() == [1]  # only item 1 (0.9) beats item 2 (0.5)
    assert ndcg_at_k(ranks, 10) == pytest.approx(1 / math.log2(3))
    assert mrr_at_k(ranks, 10) == pytest.approx(0.5)
    assert hit_rate_at_k(ranks, 1) == 0.0
    assert hit_rate_at_k(ranks, 2) == 1.0
    assert ndcg_at_k(ranks, 1) == 0.0


def test_batch_means():
    scores = np.array(
        [
            [0.1, 0.9, 0.5, 0.3],  # target 1 -> rank 0
            [0.1, 0.9, 0.5, 0.3],  # target 0 -> rank 3
            [0.4, 0.3, 0.2, 0.1],  # target 2 -> rank 2
        ]
    )
    ranks = rank_of_target(scores, np.array([1, 0, 2]))
    assert ranks.tolist() == [0, 3, 2]
    assert hit_rate_at_k(ranks, 3) == pytest.approx(2 / 3)
    assert ndcg_at_k(ranks, 3) == pytest.approx((1.0 + 0.0 + 1 / math.log2(4)) / 3)
    assert mrr_at_k(ranks, 3) == pytest.approx((1.0 + 0.0 + 1 / 3) / 3)
    assert mrr_at_k(ranks, 4) == pytest.approx((1.0 + 0.25 + 1 / 3) / 3)


def test_recall_equals_hit_rate_for_one_target():
    ranks = np.array([0, 4, 9, 12])
    for k in (1, 5, 10, 13):
        assert recall_at_k(ranks, k) == hit_rate_at_k(ranks, k)


def test_ties_optimistic_and_pessimistic():
    scores = np.array([[0.5, 0.5, 0.5, 0.9], [1.0, 1.0, 1.0, 1.0]])
    targets = np.array([1, 2])
    assert rank_of_target(scores, targets).tolist() == [1, 0]
    assert rank_of_target(scores, targets, tie_policy="pessimistic").tolist() == [3, 3]


def test_exclusion_never_drops_the_target():
    scores = np.array([[0.1, 0.9, 0.5, 0.3]])
    # item 1 (history) is excluded, target 2 is listed too but must stay ranked
    ranks = rank_of_target(scores, np.array([2]), exclude=[np.array([1, 2])])
    assert ranks.tolist() == [0]
    assert scores[0, 1] == 0.9  # input not modified
    ranks_p = rank_of_target(scores, np.array([0]), exclude=[np.array([1])], tie_policy="pessimistic")
    assert ranks_p.tolist() == [2]  # 0.5 and 0.3 beat 0.1; excluded item does not


def test_exclusion_with_empty_history():
    scores = np.array([[0.1, 0.9], [0.3, 0.2]])
    assert rank_of_target(scores, np.array([0, 0]), exclude=[np.array([], dtype=np.int64), [1]]).tolist() == [1, 0]


def test_k_larger_than_catalog():
    ranks = rank_of_target(np.array([[0.2, 0.1, 0.3]]), np.array([1]))
    assert ranks.tolist() == [2]
    m = metrics_from_ranks(ranks, ks=[50])
    assert m["hr@50"] == 1.0
    assert m["ndcg@50"] == pytest.approx(1 / math.log2(4))


def test_metric_keys():
    m = metrics_from_ranks(np.array([0, 1]), ks=[5, 10])
    assert set(m) == {f"{n}@{k}" for n in ("hr", "ndcg", "mrr", "recall") for k in (5, 10)}
    assert all(isinstance(v, float) for v in m.values())
    s = sampled_metrics_from_ranks(np.array([0, 1]), ks=[10])
    assert set(s) == {"sampled_hr@10", "sampled_ndcg@10", "sampled_mrr@10", "sampled_recall@10"}


def test_sampled_rank_is_honest_and_seeded():
    n = 50
    scores = np.tile(np.arange(n, dtype=np.float64), (4, 1))  # item i has score i
    targets = np.array([0, 10, 25, 49])
    ranks = sampled_rank_of_target(scores, targets, num_negatives=n - 1, rng=0)
    # all other items sampled -> identical to the full ranking
    assert ranks.tolist() == rank_of_target(scores, targets).tolist()
    r1 = sampled_rank_of_target(scores, targets, 5, rng=np.random.default_rng(3))
    r2 = sampled_rank_of_target(scores, targets, 5, rng=np.random.default_rng(3))
    assert r1.tolist() == r2.tolist()
    assert r1[0] == 5 and r1[3] == 0  # worst item beaten by every negative; best by none
    assert (r1 >= 0).all() and (r1 <= 5).all()


def test_sampled_negatives_never_include_target():
    # target has the lowest score; if it were sampled as its own negative with the pessimistic
    # policy the rank would exceed num_negatives
    scores = np.tile(np.arange(6, dtype=np.float64), (200, 1))
    ranks = sampled_rank_of_target(scores, np.zeros(200, dtype=np.int64), 5, rng=1, tie_policy="pessimistic")
    assert (ranks == 5).all()


@pytest.mark.parametrize(
    "scores,targets,match",
    [
        (np.zeros((0, 4)), np.zeros(0, dtype=np.int64), "empty batch"),
        (np.zeros((2, 4)), np.array([0]), "shape"),
        (np.zeros(4), np.array([0]), "shape"),
        (np.zeros((1, 4)), np.array([4]), r"\[0, 4\)"),
        (np.zeros((1, 4)), np.array([0.0]), "integer"),
        (np.array([[np.nan, 1.0]]), np.array([0]), "NaN"),
    ],
)
def test_rank_input_errors(scores, targets, match):
    with pytest.raises(ValueError, match=match):
        rank_of_target(scores, targets)


def test_other_errors():
    scores = np.zeros((2, 4))
    with pytest.raises(ValueError, match="exclude has 1 entries"):
        rank_of_target(scores, np.array([0, 1]), exclude=[np.array([1])])
    with pytest.raises(ValueError, match="tie_policy"):
        rank_of_target(scores, np.array([0, 1]), tie_policy="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        ndcg_at_k(np.array([], dtype=np.int64), 10)
    with pytest.raises(ValueError, match="positive integer"):
        hit_rate_at_k(np.array([0]), 0)
    with pytest.raises(ValueError, match="ks is empty"):
        metrics_from_ranks(np.array([0]), ks=[])
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        sampled_rank_of_target(scores, np.array([0, 1]), 4, rng=0)


def test_auc_closed_form():
    # Catalog of 5 items: the target beats 4, 2 and 0 of the other 4 items -> AUC 1, 0.5, 0.
    scores = np.array([[5.0, 4, 3, 2, 1], [5.0, 4, 3, 2, 1], [5.0, 4, 3, 2, 1]])
    ranks = rank_of_target(scores, np.array([0, 2, 4]))
    assert ranks.tolist() == [0, 2, 4]
    assert auc(ranks, 5) == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    # Per user, then averaged: users of catalogs of 3 and 11 items.
    assert auc(np.array([1, 1]), np.array([3, 11])) == pytest.approx(((1 - 1 / 2) + (1 - 1 / 10)) / 2)
    assert auc(np.array([0]), 1) == 1.0  # no negatives


def test_auc_is_the_pairwise_fraction():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(20, 30))
    targets = rng.integers(0, 30, size=20)
    pairwise = np.mean([(np.delete(s, t) < s[t]).mean() for s, t in zip(scores, targets)])
    assert auc(rank_of_target(scores, targets), 30) == pytest.approx(pairwise)


def test_auc_in_metrics_and_errors():
    m = metrics_from_ranks(np.array([0, 3]), ks=[10, 20], num_items=4)
    assert m["auc"] == pytest.approx((1 + 0) / 2)
    assert {"recall@20", "ndcg@20"} <= set(m)
    assert "auc" not in metrics_from_ranks(np.array([0, 3]), ks=[10])
    with pytest.raises(ValueError, match="catalog size"):
        auc(np.array([4]), 4)
    with pytest.raises(ValueError, match="num_items must be >= 1"):
        auc(np.array([0]), 0)
