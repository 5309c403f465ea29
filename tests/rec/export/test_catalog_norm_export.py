"""Per-catalog text normalisation (model.catalog_norm) is applied identically in adaptation and export.

A backbone checkpoint whose config says ``model.catalog_norm: center`` is adapted (item-terms, the
shipped default) and exported; the served scores (ONNX Runtime graph + bundle) must equal the
adapted model's in torch, and the bundle's catalog must be the adaptor applied to the centred text
vectors. The serving graph does not depend on the option (history rows are read from the catalog
matrix), so the session's exported graph of the same weights serves it.
"""

from __future__ import annotations

import numpy as np
import torch

from rec.adaptation.adapt import adapt_tenant, publish_adapter
from rec.adaptation.artifacts import load_adapter
from rec.config import AdaptConfig
from rec.export.parity import same_topk
from rec.export.tenant_bundle import export_tenant_bundle
from rec.serving.bundles import load_tenant_bundle
from rec.serving.feed import catalog_scores
from rec.training.checkpoint import export_backbone, load_backbone
from tests.rec.export.conftest import histories, reference_scores


def _centred_backbone(small_backbone, tmp_path):
    b = small_backbone
    cfg = b.cfg.model_copy(update={"model": b.cfg.model.model_copy(update={"catalog_norm": "center"})})
    path = export_backbone(tmp_path / "centred" / "checkpoint", b.model.state_dict(), cfg, b.tenants, {}, b.manifest.get("text_model"))
    loaded = load_backbone(path)
    assert loaded.model.catalog_norm == "center"  # the option travels with the checkpoint's config
    return loaded


def test_centred_catalog_is_exported_and_served_as_adapted(ranker, small_backbone, new_tenant, tenant_text, tmp_path):
    centred = _centred_backbone(small_backbone, tmp_path)
    acfg = AdaptConfig(method="item-terms", k_users=32, epochs=2, patience=2, lr=1e-2, torch_threads=1,
                       item_terms={"train_adaptor": True, "popularity_floor": False})
    res = adapt_tenant(centred, new_tenant, acfg, text_emb=tenant_text)
    adapter = publish_adapter(res, centred, acfg, root=tmp_path / "adapters")
    bundle = load_tenant_bundle(export_tenant_bundle(centred, new_tenant, tenant_text, adapter, tmp_path / "bundle"))

    adapted = load_adapter(adapter, centred.model, centred.checksum)[0]
    raw = torch.from_numpy(tenant_text)
    with torch.no_grad():
        by_hand = adapted.adaptor(raw - raw.mean(0)).numpy()  # item-terms without residual: the adaptor's output
        uncentred = adapted.adaptor(raw).numpy()
    assert np.abs(bundle.catalog - by_hand).max() <= 1e-5
    assert np.abs(bundle.catalog - uncentred).max() > 1e-2

    hists = histories(new_tenant)
    user = ranker.user_vectors(hists, [bundle] * len(hists))
    got = np.stack([catalog_scores(bundle, u) for u in user])
    want = reference_scores(centred, adapter, tenant_text, hists)
    assert np.abs(got - want).max() <= 1e-4
    assert same_topk(got, want).all()


def test_zero_shot_bundle_of_a_centred_backbone_is_centred(small_backbone, new_tenant, tenant_text, tmp_path):
    centred = _centred_backbone(small_backbone, tmp_path)
    plain = load_tenant_bundle(export_tenant_bundle(small_backbone, new_tenant, tenant_text, None, tmp_path / "plain"))
    cen = load_tenant_bundle(export_tenant_bundle(centred, new_tenant, tenant_text, None, tmp_path / "centred-bundle"))
    with torch.no_grad():
        want = small_backbone.model.eval().item_representations(torch.from_numpy(tenant_text - tenant_text.mean(0))).numpy()
    assert np.abs(cen.catalog - want).max() <= 1e-5
    assert np.abs(cen.catalog - plain.catalog).max() > 1e-2


def test_a_cosine_score_backbone_is_refused_at_export_with_what_to_do(small_backbone, new_tenant, tenant_text, tmp_path):
    import pytest

    from rec.export.errors import ExportError

    b = small_backbone
    cfg = b.cfg.model_copy(update={"model": b.cfg.model.model_copy(update={"score": "cosine"})})
    state = {**b.model.state_dict(), "logit_scale": torch.tensor(2.0)}
    cos = load_backbone(export_backbone(tmp_path / "cos" / "checkpoint", state, cfg, b.tenants, {}, b.manifest.get("text_model")))
    with pytest.raises(ExportError, match="model.score=dot"):
        export_tenant_bundle(cos, new_tenant, tenant_text, None, tmp_path / "bundle")
