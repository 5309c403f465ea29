"""``eval.exclude_history`` removes every earlier item of the user, not only the model's window.

SASRec+'s published ML-1M numbers rank this way (``filter_seen``); with the window alone the
long-history users kept most of their history in the ranking and NDCG@10 read 2 % low.
"""

from __future__ import annotations

import numpy as np
import torch

from rec.config import TenantSource
from rec.data.loaders import load_source
from rec.metrics import rank_of_target
from rec.models.backbone import Backbone
from rec.training.corpus import tenant_corpus
from rec.training.loop import tenant_ranks, tenant_scores

WINDOW = 5  # far shorter than ML-100K's histories (every user has >= 20 ratings)


def _setup(datasets_dir):
    tenant = load_source(TenantSource(format="movielens-100k", path=str(datasets_dir / "ml-100k"), max_users=60, seed=0))
    tc = tenant_corpus(tenant, None, 0, WINDOW, max_eval_users=None, seed=0)
    torch.manual_seed(0)
    model = Backbone(use_text=False, num_item_ids=tenant.num_items, d_model=16, max_len=WINDOW, dropout=0.0).eval()
    return tenant, tc, model


def test_test_ranks_exclude_the_whole_history(datasets_dir) -> None:
    tenant, tc, model = _setup(datasets_dir)
    rows = tc.test
    whole = [tenant.sequence(int(u))[:-1] for u in rows.user_rows]  # everything before the test item
    assert all(len(h) > WINDOW for h in whole)
    for got, want in zip(rows.seen_items(slice(None)), whole):
        np.testing.assert_array_equal(got, want)

    scores = np.concatenate([s.numpy() for _, s in tenant_scores(model, tc, None, rows.histories, 64)])
    expected = rank_of_target(scores, rows.targets, exclude=whole)
    window_only = rank_of_target(scores, rows.targets, exclude=[h[h >= 0] for h in rows.histories])
    got = tenant_ranks(model, tc, None, rows, batch_size=16, exclude_history=True)
    np.testing.assert_array_equal(got, expected)
    assert (got < window_only).any() and (got <= window_only).all()  # more items out, never a worse rank
    kept = tenant_ranks(model, tc, None, rows, batch_size=16)
    np.testing.assert_array_equal(kept, rank_of_target(scores, rows.targets))


def test_take_keeps_each_example_with_its_own_history(datasets_dir) -> None:
    _, tc, _ = _setup(datasets_dir)
    rows = tc.valid
    for idx in (np.array([5, 0, 17]), slice(1, None, 2)):
        part = rows.take(idx)
        pos = np.arange(len(rows.targets))[idx]
        np.testing.assert_array_equal(part.targets, rows.targets[pos])
        np.testing.assert_array_equal(part.histories, rows.histories[pos])
        for got, i in zip(part.seen_items(slice(None)), pos):
            np.testing.assert_array_equal(got, rows.seen_items(slice(i, i + 1))[0])
            assert got[-1] == rows.histories[i][-1]  # the window ends where the whole history ends
