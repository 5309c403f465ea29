import math

import pytest
import torch

from rec.config import ModelConfig
from rec.models.backbone import Backbone, build_backbone
from rec.data.padding import PAD, left_pad
from rec.training.batches import next_item_examples


def _model(**kw) -> Backbone:
    torch.manual_seed(0)
    m = Backbone(text_dim=16, d_model=32, n_layers=2, n_heads=2, max_len=12, dropout=0.0, **kw)
    return m.eval()


def _batch(catalog: torch.Tensor, idx: torch.Tensor):
    return catalog[idx.clamp(min=0)], idx == PAD


def test_shapes_and_scores():
    m = _model()
    text = torch.randn(50, 16)
    cat = m.item_representations(text)
    assert cat.shape == (50, 32)
    idx = torch.tensor(left_pad([[1, 2, 3], [4]], 12))
    hist, pad = _batch(cat, idx)
    h = m.encode(hist, pad)
    assert h.shape == (2, 12, 32) and torch.isfinite(h).all()
    s = m.scores(m.user_vector(hist, pad), cat)
    assert s.shape == (2, 50)


def test_causal_no_future_leak():
    m = _model()
    cat = m.item_representations(torch.randn(20, 16))
    a = torch.tensor([[1, 2, 3, 4, 5]])
    b = torch.tensor([[1, 2, 3, 9, 7]])
    ha = m.encode(*_batch(cat, a))
    hb = m.encode(*_batch(cat, b))
    assert torch.allclose(ha[:, :3], hb[:, :3], atol=1e-6)
    assert not torch.allclose(ha[:, 3:], hb[:, 3:], atol=1e-4)


def test_left_padding_does_not_change_user_vector():
    m = _model()
    cat = m.item_representations(torch.randn(20, 16))
    short = torch.tensor(left_pad([[3, 1, 4]], 3))
    long = torch.tensor(left_pad([[3, 1, 4]], 10))
    u1 = m.user_vector(*_batch(cat, short))
    u2 = m.user_vector(*_batch(cat, long))
    assert torch.allclose(u1, u2, atol=1e-5)


def test_zero_shot_unseen_catalog():
    """A text model scores a catalog of any size it never saw, from text embeddings alone."""
    m = _model()
    new_catalog = m.item_representations(torch.randn(7, 16))
    idx = torch.tensor(left_pad([[0, 6]], 12))
    s = m.scores(m.user_vector(*_batch(new_catalog, idx)), new_catalog)
    assert s.shape == (1, 7)


def test_id_only_needs_ids_and_text_needs_text():
    with pytest.raises(ValueError, match="text"):
        Backbone(text_dim=16, d_model=32, use_text=False, num_item_ids=0)
    m = Backbone(text_dim=16, d_model=32, n_heads=2, use_text=False, num_item_ids=10)
    assert m.item_representations(item_ids=torch.arange(10)).shape == (10, 32)
    with pytest.raises(ValueError, match="ID-only"):
        m.item_representations(text_emb=torch.randn(10, 16))
    with pytest.raises(ValueError, match="text_emb"):
        _model().item_representations(None)


@pytest.mark.parametrize("loss", ["ce", "sampled"])
def test_loss_decreases_on_a_learnable_pattern(loss):
    """Next item = current + 1: a few Adam steps must cut the loss clearly."""
    torch.manual_seed(0)
    m = Backbone(text_dim=16, d_model=32, n_layers=1, n_heads=2, max_len=12, dropout=0.0).train()
    text = torch.randn(30, 16)
    seqs = [list(range(s, s + 8)) for s in range(0, 20)]
    inputs, targets = next_item_examples([torch.tensor(s).numpy() for s in seqs], 12)
    inputs, targets = torch.tensor(inputs), torch.tensor(targets)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        cat = m.item_representations(text)
        h = m.encode(*_batch(cat, inputs))
        lv = m.ce_loss(h, targets, cat) if loss == "ce" else m.sampled_ce_loss(h, targets, cat, 10)
        opt.zero_grad()
        lv.backward()
        opt.step()
        losses.append(lv.item())
    assert losses[-1] < 0.5 * losses[0]


def test_build_from_config():
    cfg = ModelConfig(d_model=48, n_heads=4, n_layers=1, use_id_embedding=True)
    m = build_backbone(cfg, num_item_ids=100)
    assert m.id_emb is not None and m.id_emb.num_embeddings == 100
    assert build_backbone(ModelConfig(), num_item_ids=100).id_emb is None


def test_text_backbone_starts_with_unsaturated_logits():
    """Default temperature sqrt(D): at init the full-softmax CE is near ln N, not far above it.

    With temperature 1 the adaptor's LayerNorm gives item vectors norm ~sqrt(D) and logits of
    about +-D, so the initial CE is far above ln N (bench/README.md measured ~10 vs 8.4).
    """
    torch.manual_seed(0)
    d, n = 64, 2000
    text = torch.nn.functional.normalize(torch.randn(n, 384), dim=-1)
    targets = torch.randint(0, n, (32, 10))
    losses = {}
    for temp in (None, 1.0):
        torch.manual_seed(1)
        m = Backbone(text_dim=384, d_model=d, n_layers=2, n_heads=2, dropout=0.0, temperature=temp).eval()
        catalog = m.item_representations(text)
        hist = catalog[torch.randint(0, n, (32, 10))]
        with torch.no_grad():
            hidden = m.encode(hist, torch.zeros(32, 10, dtype=torch.bool))
            losses[temp] = m.ce_loss(hidden, targets, catalog).item()
    assert Backbone(text_dim=384, d_model=d).temperature == pytest.approx(d**0.5)
    assert Backbone(text_dim=384, d_model=d, use_text=False, num_item_ids=10).temperature == 1.0
    assert losses[None] < math.log(n) + 1.0 < losses[1.0]


def test_an_identity_adaptor_starts_at_the_title_geometry_and_trains_a_residual():
    from rec.models.backbone import TextAdaptor, prior_projection

    x = torch.randn(5, 16)
    square = TextAdaptor(16, 16, init="identity")
    assert torch.allclose(square(x), square.norm(x))  # equal widths: LayerNorm of the text itself
    p = prior_projection(384, 64)
    assert torch.allclose(p.T @ p, torch.eye(64), atol=1e-5) and torch.equal(p, prior_projection(384, 64))  # fixed, orthonormal
    a = TextAdaptor(384, 64, init="identity")
    assert not a.proj.weight.any() and "prior" in a.state_dict() and not a.prior.requires_grad
    assert "prior" not in TextAdaptor(384, 64).state_dict()  # random adaptors: checkpoints unchanged
    text = torch.nn.functional.normalize(torch.randn(8, 384), dim=1)
    a(text).sum().backward()
    assert a.proj.weight.grad.abs().sum() > 0  # the residual (LoRA's adaptor.proj target) learns
    model = build_backbone(ModelConfig(adaptor_init="identity", dropout=0.0))
    again = build_backbone(ModelConfig(adaptor_init="identity", dropout=0.0))
    again.load_state_dict(model.state_dict())
    assert torch.equal(model.item_representations(text), again.item_representations(text))
    with pytest.raises(ValueError, match="adaptor_hidden=0"):
        ModelConfig(adaptor_init="identity", adaptor_hidden=32)
