"""Mixed-domain in-batch InfoNCE (rec.training.infonce) and its CorpusLoss wiring (issue 17, item 3)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from rec.models.backbone import Backbone
from rec.training.batches import IGNORE, PAD, next_item_examples
from rec.training.corpus import Corpus, EvalRows, TenantCorpus
from rec.training.infonce import corpus_infonce_loss, infonce_loss
from rec.training.loop import CorpusLoss, make_optimizer, train_epoch
from rec.training.mixture import epoch_rows


def test_infonce_equals_a_hand_computed_value() -> None:
    hidden = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # cosine ignores the norms
    cands = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 2])
    tau = 0.5
    c = 1 / math.sqrt(2)
    # row 0: cos = (1, 0, c), positive 0; row 1: cos = (0, 1, c), positive 2
    row0 = -(1 / tau) + math.log(math.exp(1 / tau) + math.exp(0) + math.exp(c / tau))
    row1 = -(c / tau) + math.log(math.exp(0) + math.exp(1 / tau) + math.exp(c / tau))
    assert math.isclose(float(infonce_loss(hidden, cands, labels, tau)), (row0 + row1) / 2, rel_tol=1e-6)


def _model() -> Backbone:
    torch.manual_seed(0)
    return Backbone(text_dim=6, d_model=8, n_layers=1, n_heads=2, max_len=8, dropout=0.0)


def _batch() -> tuple[torch.Tensor, ...]:
    # rows 0 and 1 (tenant 0) share the target item 3 at their last position; row 2 is tenant 1,
    # whose item 3 is another item (another catalog) and must stay a separate candidate
    tenant_idx = torch.tensor([0, 0, 1])
    inputs = torch.tensor([[PAD, 0, 1], [PAD, PAD, 2], [4, 0, 1]])
    targets = torch.tensor([[IGNORE, 1, 3], [IGNORE, IGNORE, 3], [0, 1, 3]])
    return tenant_idx, inputs, targets


def _reference(model: Backbone, embs: list[torch.Tensor], tau: float, mask_duplicates: bool) -> torch.Tensor:
    """An (M, M) logit matrix over every target position (UniSRec's form), each row's candidates
    being every distinct target item once: a column whose item is the row's own target is masked
    unless it is the row's own column, and any other item's repeated columns are masked after the first."""
    tenant_idx, inputs, targets = _batch()
    hs, vs, keys = [], [], []
    for t in (0, 1):
        sel = tenant_idx == t
        cat = model.item_representations(embs[t])
        inp, tgt = inputs[sel], targets[sel]
        pad = inp == PAD
        h = model.encode(F.embedding(inp.clamp(min=0), cat), pad)
        keep = tgt >= 0
        hs.append(h[keep]), vs.append(cat[tgt[keep]]), keys.append(tgt[keep] + 100 * t)
    h, v, k = torch.cat(hs), torch.cat(vs), torch.cat(keys)
    logits = F.normalize(h, dim=-1) @ F.normalize(v, dim=-1).T / tau
    if mask_duplicates:
        same = k[:, None] == k[None, :]
        own_dup = same & ~torch.eye(len(k), dtype=torch.bool)
        first = torch.tensor([int((k[:j] == k[j]).sum()) == 0 for j in range(len(k))])
        other_repeat = ~same & ~first[None, :]
        logits = logits.masked_fill(own_dup | other_repeat, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(k)))


def test_same_target_duplicates_are_not_negatives() -> None:
    model = _model()
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    embs = [torch.randn(5, 6, generator=g) for g in gens]
    loss = corpus_infonce_loss(model, *_batch(), embs, 1.0)
    assert abs(float(loss) - float(_reference(model, embs, 1.0, mask_duplicates=True))) < 1e-5
    # the check can fail: counting the shared target as a negative gives another value
    assert abs(float(loss) - float(_reference(model, embs, 1.0, mask_duplicates=False))) > 1e-2


def test_gradients_reach_the_adaptor_and_the_encoder() -> None:
    model = _model()
    embs = [torch.randn(5, 6), torch.randn(5, 6)]
    corpus_infonce_loss(model, *_batch(), embs, 0.07).backward()
    for name in ("adaptor.proj.weight", "adaptor.bias", "blocks.0.attn.in_proj.weight", "pos_emb.weight"):
        p = dict(model.named_parameters()).get(name)
        if p is None:
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.adaptor.proj.weight.grad.abs().sum() > 0


def _tenant(name: str, n: int, seqs: list[np.ndarray], emb: np.ndarray) -> TenantCorpus:
    inputs, targets = next_item_examples(seqs, 10)
    empty = EvalRows(np.zeros(0, np.int64), np.zeros((0, 10), np.int64), np.zeros(0, np.int64))
    return TenantCorpus(name, n, -1, emb, inputs, targets, empty, empty, np.ones(n, np.float32), name)


def test_corpus_loss_trains_with_infonce_and_balanced_batches() -> None:
    rng = np.random.default_rng(0)
    tenants = [_tenant(f"t{i}", 12, [rng.integers(0, 12, rng.integers(3, 8)) for _ in range(40 * (i + 1))],
                       rng.standard_normal((12, 6)).astype(np.float32)) for i in range(3)]
    corpus = Corpus(tenants, 10, None)
    embs = [torch.from_numpy(t.text_emb) for t in tenants]
    model = _model()
    loss_model = CorpusLoss(model, "infonce", infonce_temperature=0.07)
    opt = make_optimizer(model.parameters(), 3e-3)

    class Train:
        mixture, mixture_weights, batch_size, seed = "balanced", {}, 24, 0

    losses = [train_epoch(loss_model, opt, corpus, epoch_rows(corpus, Train, e), embs, 24, 1.0) for e in range(8)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
