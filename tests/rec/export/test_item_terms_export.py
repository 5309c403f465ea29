"""The item-terms method through export and serving: catalog-side, exact, on the base graph."""

from __future__ import annotations

import numpy as np

from rec.export.parity import same_topk
from rec.serving.feed import catalog_scores
from rec.export.tenant_bundle import export_tenant_bundle
from rec.serving.bundles import load_tenant_bundle
from tests.rec.export.conftest import histories, reference_scores


def test_item_terms_bundle_ranks_like_torch_on_the_base_graph(ranker, bundles, adapters, small_backbone, new_tenant, tenant_text):
    bundle = bundles["item-terms"]
    assert bundle.item_bias is not None and bundle.item_bias.shape == (new_tenant.num_items,)
    assert not bundle.lora and bundle.prompt is None and bundle.manifest["item_bias"]  # nothing per row
    hists = histories(new_tenant)
    runs, base_runs = ranker.runs, ranker.base_runs
    user = ranker.user_vectors(hists, [bundle] * len(hists))
    assert ranker.base_runs - base_runs == 1 == ranker.runs - runs  # serving cost: the adapter-free graph
    got = np.stack([catalog_scores(bundle, u) for u in user])
    want = reference_scores(small_backbone, adapters["item-terms"], tenant_text, hists)
    assert np.abs(got - want).max() <= 1e-4
    assert same_topk(got, want).all()
    rows, scores = ranker.top_k(bundle, user[0], 10)
    assert np.allclose(scores, got[0][rows], atol=1e-6) and list(rows) == list(np.argsort(-got[0], kind="stable")[:10])
    # the terms matter: without the bias the ranking is another one
    assert not same_topk(user @ bundle.catalog.T, want).all()


def test_item_bias_survives_an_int8_catalog_in_a_serving_bundle(ranker, adapters, small_backbone, new_tenant, tenant_text, tmp_path):
    path = export_tenant_bundle(small_backbone, new_tenant, tenant_text, adapters["item-terms"], tmp_path / "b8", catalog_dtype="int8")
    served = load_tenant_bundle(path)
    assert served.item_bias is not None and served.item_bias.dtype == np.float32
    assert served.nbytes >= served.item_bias.nbytes + served.catalog.nbytes
    hists = histories(new_tenant, n=8)
    user = ranker.user_vectors(hists, [served] * len(hists))
    want = reference_scores(small_backbone, adapters["item-terms"], tenant_text, hists)
    got = np.stack([catalog_scores(served, u) for u in user])
    assert np.abs(got - want).max() < 0.05  # int8 catalog rows; the bias itself is stored fp32


def test_the_popularity_fallback_serves_exactly_the_popularity_ranking(ranker, small_backbone, new_tenant, tenant_text, tmp_path):
    """When the floor ships popularity (catalog gated to zero), serving ranks by the K users' counts."""
    from rec.adaptation.artifacts import save_adapter
    from rec.adaptation.methods.item_terms import ItemTerms, popularity_scores
    from rec.adaptation.prepare import prepare_model
    from rec.adaptation.registry import AdaptContext
    from rec.config import AdaptConfig
    from rec.serving.bundles import load_tenant_bundle

    counts = np.bincount(np.concatenate(new_tenant.sequences()[:20]), minlength=new_tenant.num_items).astype(np.float32)
    acfg = AdaptConfig(method="item-terms")
    model = prepare_model(small_backbone.model, acfg, ctx=AdaptContext(None, 1, new_tenant.num_items, counts))
    import torch

    ItemTerms._set(model, torch.from_numpy(popularity_scores(counts)), 0.0)
    adapter = save_adapter(model, acfg, new_tenant.name, tmp_path / "adapters", {"backbone_checksum": small_backbone.checksum})
    bundle = load_tenant_bundle(export_tenant_bundle(small_backbone, new_tenant, tenant_text, adapter, tmp_path / "b"))
    assert not bundle.catalog.any()
    user = ranker.user_vectors(histories(new_tenant, n=4), [bundle] * 4)
    want = np.argsort(-popularity_scores(counts), kind="stable")[:10]
    for u in user:
        rows, _ = ranker.top_k(bundle, u, 10)
        assert list(rows) == list(want)
