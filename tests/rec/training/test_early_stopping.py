"""The shared early-stopping helper and held-out tenant corpora (no Ray needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec.data.schema import DataError, ItemTable, Tenant
from rec.training.corpus import tenant_corpus
from rec.training.early_stopping import EarlyStopping


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience():
    model = torch.nn.Linear(2, 1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    stopper = EarlyStopping(model, {"ndcg@10": 0.10}, patience=2)
    with torch.no_grad():
        model.weight.fill_(1.0)
    assert not stopper.update(0, {"ndcg@10": 0.20}, model)  # a gain: these weights are kept
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.fill_(-5.0)
    assert not stopper.update(1, {"ndcg@10": 0.20}, model)  # a tie is no gain
    assert stopper.update(2, {"ndcg@10": 0.05}, model)  # second epoch without a gain: stop
    stopper.restore(model)
    assert stopper.best_epoch == 0 and stopper.best == {"ndcg@10": 0.20}
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())
    # nothing beats the start: the start comes back and best_epoch stays -1
    fresh = EarlyStopping(model, {"ndcg@10": 0.9}, patience=1)
    with torch.no_grad():
        model.weight.fill_(3.0)
    assert fresh.update(0, {"ndcg@10": 0.1}, model)
    fresh.restore(model)
    assert fresh.best_epoch == -1 and torch.equal(model.weight, best["weight"])
    assert not torch.equal(model.weight, start["weight"])


def test_held_out_tenant_needs_no_trainable_users():
    """Every user has 3 interactions: evaluable, but nothing to train on (needs >= 4)."""
    n_users, n_items = 6, 10
    seqs = np.random.default_rng(0).integers(0, n_items, size=(n_users, 3))
    t = Tenant("short", ItemTable(np.array([f"i{i}" for i in range(n_items)]), [f"item {i}" for i in range(n_items)]),
               np.array([f"u{u}" for u in range(n_users)]), np.arange(0, 3 * n_users + 1, 3),
               seqs.reshape(-1), np.arange(3 * n_users, dtype=np.int64))
    with pytest.raises(DataError, match="nothing to train on"):
        tenant_corpus(t, None, 0, 10, None, 0)
    held = tenant_corpus(t, None, -1, 10, None, 0, train=False)
    assert held.train_inputs.shape == (0, 10) and len(held.test.targets) == n_users
    assert (held.test.targets == seqs[:, 2]).all() and (held.valid.targets == seqs[:, 1]).all()


def test_counters_and_weights_resume_a_stopper():
    """A restarted Ray Train worker resumes early stopping from its checkpoint."""
    model = torch.nn.Linear(2, 1)
    first = EarlyStopping(model, {"ndcg@10": -1.0}, patience=2)
    first.update(0, {"ndcg@10": 0.3}, model)
    with torch.no_grad():
        model.weight.fill_(7.0)
    first.update(1, {"ndcg@10": 0.1}, model)
    counters = first.counters()
    assert counters == {"best": 0.3, "best_epoch": 0, "bad_epochs": 1}
    again = EarlyStopping(model, {"ndcg@10": -1.0}, patience=2)
    again.resume(first.best_weights, counters)
    assert again.update(2, {"ndcg@10": 0.2}, model) and again.stopped  # the second epoch without a gain
    again.restore(model)
    assert torch.equal(model.weight, first.best_weights["weight"]) and again.best_epoch == 0
