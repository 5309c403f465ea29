"""Domain-balanced batches (rec.training.mixture)."""

from __future__ import annotations

import numpy as np
import pytest

from rec.training.batches import shard_rows
from rec.training.corpus import Corpus, EvalRows, TenantCorpus
from rec.training.mixture import balanced_rows, batch_counts, epoch_rows


def test_batch_counts_follow_the_weights_and_fill_the_batch() -> None:
    assert batch_counts(np.array([2.0, 1.0, 1.0]), 64).tolist() == [32, 16, 16]
    assert batch_counts(np.array([1.0, 1.0, 1.0]), 10).sum() == 10
    with pytest.raises(ValueError, match="positive sum"):
        batch_counts(np.array([0.0, 0.0]), 8)


def test_every_batch_draws_each_domain_at_its_proportion() -> None:
    sizes = [1000, 100, 10]  # a large, a small and a tiny tenant
    rows = balanced_rows(sizes, np.array([2.0, 1.0, 1.0]), 64, epoch=0, seed=0)
    assert len(rows) % 64 == 0 and len(rows) // 64 == -(-sum(sizes) // 64)
    tenant = np.searchsorted(np.cumsum(sizes), rows, side="right")  # global row -> tenant
    for batch in tenant.reshape(-1, 64):
        assert np.bincount(batch, minlength=3).tolist() == [32, 16, 16]
    assert set(rows[tenant == 2].tolist()) == set(range(1100, 1110))  # the tiny tenant is cycled whole
    assert not np.array_equal(rows, balanced_rows(sizes, np.array([2.0, 1.0, 1.0]), 64, epoch=1, seed=0))  # reshuffled per epoch
    assert np.array_equal(rows, balanced_rows(sizes, np.array([2.0, 1.0, 1.0]), 64, epoch=0, seed=0))  # seeded


def test_ranks_get_their_own_balanced_batches() -> None:
    a = balanced_rows([300, 300], np.ones(2), 16, 0, 0, rank=0, world_size=2)
    b = balanced_rows([300, 300], np.ones(2), 16, 0, 0, rank=1, world_size=2)
    assert len(a) == len(b) == 16 * 19 and not np.array_equal(a, b)


def test_natural_mixture_is_the_seeded_permutation() -> None:
    empty = EvalRows(np.zeros(0, np.int64), np.zeros((0, 4), np.int64), np.zeros(0, np.int64))
    t = [TenantCorpus(n, 5, -1, None, np.zeros((r, 4), np.int64), np.zeros((r, 4), np.int64), empty, empty, np.ones(5), n)
         for n, r in (("a", 30), ("b", 7))]

    class Train:
        mixture, mixture_weights, batch_size, seed = "natural", {}, 8, 3

    assert np.array_equal(epoch_rows(Corpus(t, 4, None), Train, 2), shard_rows(37, 2, 3, 0, 1))
    Train.mixture, Train.mixture_weights = "balanced", {"b": 3.0}
    rows = epoch_rows(Corpus(t, 4, None), Train, 0)
    assert np.bincount((rows[:8] >= 30).astype(int)).tolist() == [2, 6]
