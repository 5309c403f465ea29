"""Per-catalog normalisation of the item text vectors (rec.models.catalog_norm) and its place in the backbone."""

from __future__ import annotations

import pytest
import torch

from rec.config import ModelConfig
from rec.models.backbone import Backbone, build_backbone
from rec.models.catalog_norm import normalize_catalog_text


def _catalog(n: int = 600, d: int = 32, seed: int = 0) -> torch.Tensor:
    """Unit vectors sharing a strong common direction, like one shop's title embeddings."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.linspace(0.2, 2.0, d) + 4.0
    return torch.nn.functional.normalize(x, dim=-1)


def test_center_removes_the_catalog_mean_and_none_changes_nothing():
    x = _catalog()
    assert torch.equal(normalize_catalog_text(x, "none"), x)
    c = normalize_catalog_text(x, "center")
    assert c.mean(0).abs().max() < 1e-6
    assert torch.allclose(c, x - x.mean(0))


def test_whiten_maps_each_variance_to_its_shrunk_ratio():
    """Eigenvalue l of the centred covariance becomes l / (l + eps * mean(l)) (times 1/d): near-isotropic."""
    from rec.models.catalog_norm import WHITEN_EPS

    x = _catalog()
    c = (x - x.mean(0)).double()
    before = torch.linalg.eigvalsh(c.T @ c / len(c))
    w = normalize_catalog_text(x, "whiten").double()
    after = torch.linalg.eigvalsh(w.T @ w / len(w)) * x.shape[1]
    want = before / (before + WHITEN_EPS * before.mean())
    assert torch.allclose(after, want, atol=1e-4)
    assert after.max() / after.min() < 0.1 * before.max() / before.min()  # the spread of the spectrum shrinks 10x
    assert 0.5 < w.norm(dim=1).mean() < 1.0


def test_fewer_items_than_dimensions_whiten_without_nan():
    w = normalize_catalog_text(_catalog(n=5, d=32), "whiten")
    assert torch.isfinite(w).all()


def test_unknown_mode_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="center"):
        normalize_catalog_text(_catalog(), "zca")


def test_the_backbone_normalises_the_whole_catalog_before_its_adaptor():
    torch.manual_seed(0)
    plain = Backbone(text_dim=32, d_model=16, n_heads=2, dropout=0.0)
    centred = build_backbone(ModelConfig(text_dim=32, d_model=16, n_heads=2, dropout=0.0, catalog_norm="center"))
    centred.load_state_dict(plain.state_dict())
    x = _catalog()
    with torch.no_grad():
        assert torch.allclose(centred.item_representations(x), plain.item_representations(x - x.mean(0)), atol=1e-6)
        assert not torch.allclose(centred.item_representations(x), plain.item_representations(x), atol=1e-3)
        # the statistics are the catalog's: shifting every item by one vector changes nothing
        assert torch.allclose(centred.item_representations(x + 0.3), centred.item_representations(x), atol=1e-5)


def test_cosine_scores_start_at_the_dot_scores_of_layer_normed_vectors_and_learn_a_temperature():
    torch.manual_seed(0)
    dot = Backbone(text_dim=32, d_model=16, n_heads=2, dropout=0.0)
    cos = Backbone(text_dim=32, d_model=16, n_heads=2, dropout=0.0, score="cosine")
    missing, _ = cos.load_state_dict(dot.state_dict(), strict=False)
    assert missing == ["logit_scale"] and cos.logit_scale.requires_grad
    cat = dot.item_representations(_catalog())
    h = dot.final_norm(torch.randn(4, 16))
    assert torch.allclose(cos.scores(h, cat), dot.scores(h, cat), atol=0.05)
    cos.scores(h, cat).sum().backward()
    assert cos.logit_scale.grad is not None
