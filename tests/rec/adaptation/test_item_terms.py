"""The item-terms adaptation method: registered everywhere, initialised from popularity, floored by it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec.adaptation.adapt import adapt_tenant, fewshot_corpus, publish_adapter
from rec.adaptation.artifacts import load_adapter
from rec.adaptation.methods.item_terms import log_popularity, popularity_scores
from rec.adaptation.prepare import prepare_model, scoring_backbone
from rec.adaptation.registry import AdaptContext, ExportKind, get_method, method_names
from rec.config import AdaptConfig, ConfigError, EvalConfig, TenantSource, load_config
from rec.data.loaders import load_source
from rec.data.splits import k_shot_split
from rec.io.artifacts import read_manifest
from rec.metrics import metrics_from_ranks, rank_of_target
from rec.text import encode_items


def test_the_registry_the_cli_the_config_and_tune_know_it():
    from rec.cli import build_parser
    from tuning.search_spaces import load_sweep, method_search_space

    assert "item-terms" in method_names() and get_method("item-terms").export is ExportKind.CATALOG
    args = build_parser().parse_args(["adapt", "--backbone", "b", "--method", "item-terms"])
    assert args.method == "item-terms"
    cfg = load_config(None, ["adapt.method=item-terms", "adapt.item_terms.id_residual=true"])
    assert cfg.adapt.item_terms.id_residual and not AdaptConfig().item_terms.id_residual
    with pytest.raises(ConfigError, match="adapt.item_terms.id_residal"):
        load_config(None, ["adapt.item_terms.id_residal=true"])
    space = method_search_space(["lora", "item-terms"])
    assert space["adapt.method"] == {"choice": ["lora", "item-terms"]} and "adapt.item_terms.id_residual" in space
    spec = load_sweep({"name": "it", "methods": ["item-terms"], "search_space": {"adapt.lr": {"loguniform": [1e-3, 1e-2]}}})
    assert {"adapt.method", "adapt.item_terms.id_residual", "adapt.lr"} <= set(spec.search_space)


def test_bias_starts_at_the_k_users_log_popularity(small_backbone, new_tenant):
    text_emb = encode_items(list(new_tenant.items.text), small_backbone.cfg.text)
    split = k_shot_split(new_tenant, 16, None, 0, None, 0.2)
    tc = fewshot_corpus(split, text_emb, small_backbone.cfg.data.max_seq_len)
    counts = np.bincount(np.concatenate(split.train.sequences()), minlength=new_tenant.num_items)
    acfg = AdaptConfig(method="item-terms", item_terms={"id_residual": True})
    model = prepare_model(small_backbone.model, acfg, ctx=AdaptContext(None, 1, tc.num_items, tc.item_popularity))
    bias = model.item_bias.detach().numpy()
    assert np.allclose(bias, np.log1p(counts)) and np.all(bias[counts == 0] == 0) and (counts == 0).any()
    assert torch.equal(model.seen.bool(), torch.from_numpy(counts > 0))
    assert not model.item_residual.detach().any()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"item_bias", "item_residual"}  # the encoder and the adaptor stay frozen
    # with zero terms the item vectors are the base model's; the bias is added to every score
    model.eval()
    with torch.no_grad():
        cat = model.item_representations(torch.from_numpy(text_emb))
        assert torch.allclose(cat, small_backbone.model.item_representations(torch.from_numpy(text_emb)))
        h = torch.randn(3, cat.shape[1])
        assert torch.allclose(model.scores(h, cat), small_backbone.model.scores(h, cat) + model.item_bias, atol=1e-6)


def test_trained_terms_save_and_reload_exactly(small_backbone, new_tenant, tmp_path):
    text_emb = encode_items(list(new_tenant.items.text), small_backbone.cfg.text)
    # K=64: enough users that an epoch beats the starting weights (else early stopping restores the zero init)
    acfg = AdaptConfig(method="item-terms", k_users=64, epochs=3, lr=1e-2, torch_threads=1,
                       item_terms={"id_residual": True, "popularity_floor": False})
    res = adapt_tenant(small_backbone, new_tenant, acfg, text_emb=text_emb)
    model = scoring_backbone(res.model)
    assert model.item_residual.detach().abs().sum() > 0 and res.epochs == 3
    assert not model.item_residual.detach()[model.seen == 0].any()  # residuals only for seen items
    path = publish_adapter(res, small_backbone, acfg, root=tmp_path)
    loaded, manifest = load_adapter(path, small_backbone.model, small_backbone.checksum)
    assert manifest["method"] == "item-terms" and manifest["popularity_floor"] is None
    with torch.no_grad():
        emb = torch.from_numpy(text_emb)
        a, b = model.eval().item_representations(emb), loaded.item_representations(emb)
        h = torch.randn(4, a.shape[1])
        assert torch.equal(a, b) and torch.equal(model.scores(h, a), loaded.scores(h, b))


@pytest.fixture(scope="module")
def movielens(datasets_dir, small_backbone):
    """ML-100K with real titles, encoded with the backbone's text model."""
    tenant = load_source(TenantSource(format="movielens-100k", path=str(datasets_dir / "ml-100k"), name="ml-100k"))
    return tenant, encode_items(list(tenant.items.text), small_backbone.cfg.text)


@pytest.mark.parametrize("terms", [{}, {"train_adaptor": True}], ids=["bias", "bias+adaptor (the few-shot bench's default)"])
def test_popularity_floor_on_movielens(small_backbone, movielens, tmp_path, terms):
    """The shipped model is never below the K users' popularity on the tenant's validation users."""
    tenant, text_emb = movielens
    eval_cfg = EvalConfig()
    acfg = AdaptConfig(method="item-terms", k_users=64, epochs=4, lr=5e-3, torch_threads=1, num_eval_users=300, item_terms=terms)
    res = adapt_tenant(small_backbone, tenant, acfg, eval_cfg, text_emb=text_emb)
    floor = res.method_report["popularity_floor"]
    cands = floor["candidates"]
    assert set(cands) == {"model", "blend_0.5", "blend_1", "blend_2", "popularity"}
    assert cands[floor["chosen"]] == max(cands.values()) >= cands["popularity"]
    assert res.valid["ndcg@10"] == pytest.approx(cands[floor["chosen"]], abs=1e-9)
    # the popularity candidate is exactly the K users' popularity ranking, computed here independently
    counts = np.bincount(np.concatenate(res.split.train.sequences()), minlength=tenant.num_items)
    _, hists, targets = res.split.eval_examples("valid")
    scores = np.tile(popularity_scores(counts), (len(targets), 1))
    pop = metrics_from_ranks(rank_of_target(scores, np.asarray(targets)), ks=[10])["ndcg@10"]
    assert cands["popularity"] == pytest.approx(pop, abs=1e-6)
    assert np.allclose(log_popularity(counts), np.log1p(counts))
    path = publish_adapter(res, small_backbone, acfg, root=tmp_path)
    assert read_manifest(path)["popularity_floor"]["chosen"] == floor["chosen"]
