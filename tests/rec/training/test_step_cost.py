"""What the loop does to make a step cheaper must not change what it computes (issue 16)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rec.models.backbone import Backbone
from rec.models.layers import Dropout, dropout
from rec.training.batches import IGNORE, PAD, next_item_examples
from rec.training.corpus import Corpus, EvalRows, TenantCorpus
from rec.training.loop import CorpusLoss, iterate_batches, make_optimizer, trim_padding


def _tenant(name: str, n: int, seqs: list[np.ndarray], offset: int, T: int = 12) -> TenantCorpus:
    inputs, targets = next_item_examples(seqs, T)
    empty = EvalRows(np.zeros(0, np.int64), np.zeros((0, T), np.int64), np.zeros(0, np.int64))
    return TenantCorpus(name, n, offset, None, inputs, targets, empty, empty, np.ones(n, np.float32), name)


def _corpus() -> Corpus:
    rng = np.random.default_rng(0)
    short = [rng.integers(0, 20, rng.integers(2, 6)) for _ in range(30)]  # histories far shorter than T
    longer = [rng.integers(0, 15, rng.integers(2, 10)) for _ in range(20)]
    return Corpus([_tenant("a", 20, short, 0), _tenant("b", 15, longer, 20)], 12, None)


def test_trim_padding_drops_only_all_padding_columns() -> None:
    inputs = np.array([[PAD, PAD, PAD, 1, 2], [PAD, PAD, 3, 4, 5]])
    targets = np.array([[IGNORE, IGNORE, IGNORE, 2, 7], [IGNORE, IGNORE, 4, 5, 6]])
    x, y = trim_padding(inputs, targets)
    assert x.tolist() == [[PAD, 1, 2], [3, 4, 5]] and y.tolist() == [[IGNORE, 2, 7], [4, 5, 6]]
    x, _ = trim_padding(np.full((2, 4), PAD), np.full((2, 4), IGNORE))
    assert x.shape == (2, 1)  # an all-padding batch keeps one column


def test_trimmed_batches_give_the_untrimmed_loss() -> None:
    corpus = _corpus()
    torch.manual_seed(0)
    model = Backbone(use_text=False, num_item_ids=corpus.num_item_ids, d_model=16, max_len=12, dropout=0.0).eval()
    loss = CorpusLoss(model)
    rows = np.random.default_rng(1).permutation(corpus.num_train_rows)
    t_idx, r_idx = corpus.row_index()
    for (ts, x, y), start in zip(iterate_batches(corpus, rows, 16), range(0, len(rows), 16)):
        sel = rows[start : start + 16]
        full_x = np.stack([corpus.tenants[t].train_inputs[r] for t, r in zip(t_idx[sel], r_idx[sel])])
        full_y = np.stack([corpus.tenants[t].train_targets[r] for t, r in zip(t_idx[sel], r_idx[sel])])
        assert x.shape[1] < 12 and np.array_equal(full_x[:, 12 - x.shape[1] :], x.numpy())  # same rows, in order
        with torch.no_grad():
            trimmed = loss(ts, x, y, corpus.tenants, [None, None])
            untrimmed = loss(ts, torch.from_numpy(full_x), torch.from_numpy(full_y), corpus.tenants, [None, None])
        assert trimmed.item() == pytest.approx(untrimmed.item(), rel=1e-5)


def test_fused_adamw_makes_the_plain_adamw_update() -> None:
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
    b = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
    b.load_state_dict(a.state_dict())
    fused, plain = make_optimizer(a.parameters(), 1e-2, 0.1), torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.1)
    assert fused.defaults["fused"] is True
    x = torch.randn(32, 8)
    for _ in range(5):
        for m, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            m(x).pow(2).mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_cpu_dropout_keeps_the_distribution() -> None:
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = dropout(x, 0.25, True)
    assert (y > 0).float().mean().item() == pytest.approx(0.75, abs=0.005)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    assert y.unique().tolist() == pytest.approx([0.0, 4 / 3])  # kept values scaled by 1 / (1 - p)
    d = Dropout(0.25).eval()
    assert torch.equal(d(x), x) and isinstance(d, torch.nn.Dropout)  # make_student sets .p on nn.Dropout


def test_id_only_models_scale_their_input_like_sasrec() -> None:
    assert Backbone(use_text=False, num_item_ids=10, d_model=16).input_scale == math.sqrt(16)
    assert Backbone(use_text=True, d_model=16, text_dim=8).input_scale == 1.0
    assert Backbone(use_text=False, num_item_ids=10, d_model=16, input_scale=1.0).input_scale == 1.0


def test_the_optimizer_factory_gives_plain_sgd_or_refuses_an_unknown_kind():
    p = torch.nn.Parameter(torch.ones(3))
    opt = make_optimizer([p], 0.5, kind="sgd")
    p.grad = torch.tensor([1.0, 2.0, -2.0])
    opt.step()
    assert isinstance(opt, torch.optim.SGD) and p.detach().tolist() == [0.5, 0.0, 2.0]  # exactly -lr * grad
    with pytest.raises(ValueError, match="choose 'adamw' or 'sgd'"):
        make_optimizer([p], 0.5, kind="adam")
