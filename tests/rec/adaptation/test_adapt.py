from __future__ import annotations

import threading

import numpy as np
import peft
import pytest
import torch

from rec.adaptation.adapt import adapt_tenant, publish_adapter
from rec.adaptation.artifacts import list_versions, load_adapter
from rec.adaptation.prepare import prepare_model, scoring_backbone
from rec.adaptation.registry import TrainingHooks
from rec.config import AdaptConfig
from rec.data.schema import DataError, Tenant
from rec.io.artifacts import ArtifactError
from rec.text import encode_items
from rec.data.padding import PAD, left_pad

METHODS = ["zero-shot", "head", "prompt", "lora", "full"]


def _scores(model, text_emb: np.ndarray, seqs) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        cat = model.item_representations(torch.from_numpy(text_emb))
        idx = torch.tensor(left_pad(seqs, 20))
        return model.scores(model.user_vector(cat[idx.clamp(min=0)], idx == PAD), cat)


@pytest.fixture(scope="module")
def text_emb(small_backbone, new_tenant):
    return encode_items(list(new_tenant.items.text), small_backbone.cfg.text)


@pytest.fixture(scope="module")
def results(small_backbone, new_tenant, text_emb):
    out = {}
    for m in METHODS:
        acfg = AdaptConfig(method=m, k_users=48, epochs=8, lr=5e-3, patience=8, torch_threads=1)
        out[m] = (acfg, adapt_tenant(small_backbone, new_tenant, acfg, text_emb=text_emb))
    return out


def test_every_method_runs_on_the_same_held_out_users(results):
    eval_users = {m: tuple(r.split.eval_rows) for m, (_, r) in results.items()}
    assert len(set(eval_users.values())) == 1
    for m, (_, r) in results.items():
        assert 0.0 <= r.test["ndcg@10"] <= 1.0 and r.adapt_s > 0
    assert results["zero-shot"][1].trainable_params == 0 and results["zero-shot"][1].epochs == 0


def test_trained_methods_beat_zero_shot_on_validation(results):
    zs = results["zero-shot"][1].valid["ndcg@10"]
    for m in ("head", "lora", "full"):
        assert results[m][1].valid["ndcg@10"] > zs, m


def test_only_the_method_parameters_change(small_backbone, results):
    base = dict(small_backbone.model.named_parameters())
    for m in ("head", "prompt"):
        model = results[m][1].model
        changed = {n for n, p in model.named_parameters() if n in base and not torch.equal(p, base[n])}
        expected_prefix = "adaptor." if m == "head" else None
        assert all(n.startswith(expected_prefix) for n in changed) if expected_prefix else not changed
    lora = results["lora"][1].model  # the default: LoRA on the encoder + the adaptor trained in full
    assert isinstance(lora, peft.PeftModel)
    trained = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n or ".adaptor.modules_to_save." in n for n in trained), trained
    frozen = {n: p for n, p in lora.named_parameters() if n not in trained}
    for n, p in frozen.items():
        key = n.removeprefix("base_model.model.").replace(".base_layer", "").replace(".original_module", "")
        assert torch.equal(p, base[key]), n
    # the pretrained backbone object itself is untouched
    assert small_backbone.model.prompt is None


def test_lora_with_the_adaptor_trains_both_and_reloads(small_backbone, new_tenant, text_emb, tmp_path):
    """``lora.train_adaptor`` (the default): LoRA on the encoder, the whole item-text adaptor trained, nothing else."""
    from rec.config import LoraConfig

    assert LoraConfig().train_adaptor
    acfg = AdaptConfig(method="lora", lora=LoraConfig(rank=4), k_users=48, epochs=4, lr=5e-3,
                       patience=8, torch_threads=1)
    r = adapt_tenant(small_backbone, new_tenant, acfg, text_emb=text_emb)
    model, base = r.model, dict(small_backbone.model.named_parameters())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".adaptor.modules_to_save." in n for n in trainable), trainable
    assert not any("adaptor" in n and "lora_" in n for n in trainable)  # no LoRA on the adaptor it trains in full
    n_adaptor = sum(p.numel() for p in small_backbone.model.adaptor.parameters())
    assert r.trainable_params > n_adaptor
    path = publish_adapter(r, small_backbone, acfg, root=tmp_path)
    loaded, _ = load_adapter(path, small_backbone.model, small_backbone.checksum)
    assert not torch.equal(loaded.adaptor.proj.weight, base["adaptor.proj.weight"])  # the trained adaptor came back
    seqs = [new_tenant.sequence(u)[:-1] for u in r.split.eval_rows[:8]]
    assert torch.allclose(_scores(scoring_backbone(model), text_emb, seqs), _scores(loaded, text_emb, seqs), atol=1e-5)
    with pytest.raises(ValueError, match="no LoRA target"):
        prepare_model(small_backbone.model, AdaptConfig(method="lora", lora=LoraConfig(target_modules=["adaptor.proj"],
                                                                                       train_adaptor=True)))


def test_adalora_allocates_ranks_and_round_trips_with_peft(small_backbone, new_tenant, text_emb, tmp_path):
    """``lora.kind: adalora``: PEFT AdaLoRA, ranks pruned by importance per projection; the artifact is PEFT's."""
    import copy

    from rec.adaptation.methods.lora import training_hooks
    from rec.config import LoraConfig

    acfg = AdaptConfig(method="lora", lora=LoraConfig(kind="adalora", rank=2, adalora_init_rank=6, adalora_warmup=0.0,
                                                      adalora_final=0.2), k_users=48, epochs=6, lr=5e-3, patience=8, torch_threads=1)
    r = adapt_tenant(small_backbone, new_tenant, acfg, text_emb=text_emb)
    assert isinstance(r.model.peft_config["default"], peft.AdaLoraConfig) and r.epochs == 6
    hooks = training_hooks(r.model)
    assert float(hooks.regularizer().detach()) > 0 and hooks.after_step is not None
    assert training_hooks(prepare_model(small_backbone.model, AdaptConfig(method="lora"))) == TrainingHooks()  # every hook None
    pattern = r.model.peft_config["default"].rank_pattern  # the directions each projection kept
    kept = [int(sum(m)) for m in pattern.values()]
    assert pattern and max(kept) <= 6 and sum(kept) < 6 * len(kept)  # pruned, unevenly
    path = publish_adapter(r, small_backbone, acfg, root=tmp_path)
    ours, manifest = load_adapter(path, small_backbone.model, small_backbone.checksum)
    plain = peft.PeftModel.from_pretrained(copy.deepcopy(small_backbone.model), str(path))
    assert manifest["hyperparameters"]["lora"]["kind"] == "adalora"
    seqs = [new_tenant.sequence(u)[:-1] for u in r.split.eval_rows[:8]]
    want = _scores(scoring_backbone(r.model), text_emb, seqs)
    assert torch.allclose(want, _scores(ours, text_emb, seqs), atol=1e-5)
    assert torch.allclose(want, _scores(plain.base_model.model, text_emb, seqs), atol=1e-5)
    with pytest.raises(ValueError, match="number of training steps"):
        prepare_model(small_backbone.model, acfg)


def test_publish_and_reload_gives_identical_scores(small_backbone, new_tenant, text_emb, results, tmp_path):
    seqs = [new_tenant.sequence(u)[:-1] for u in results["lora"][1].split.eval_rows[:8]]
    for m, (acfg, r) in results.items():
        path = publish_adapter(r, small_backbone, acfg, root=tmp_path)
        loaded, manifest = load_adapter(path, small_backbone.model, small_backbone.checksum)
        assert manifest["method"] == m and manifest["backbone_checksum"] == small_backbone.checksum
        assert manifest["k_users"] == 48 and manifest["data_hash"] == r.data_hash
        assert manifest["metrics"]["test"]["ndcg@10"] == pytest.approx(r.test["ndcg@10"])
        want = _scores(scoring_backbone(r.model), text_emb, seqs)
        got = _scores(loaded, text_emb, seqs)
        assert torch.allclose(want, got, atol=1e-5), m
    assert list_versions(tmp_path, new_tenant.name) == [1, 2, 3, 4, 5]


def test_our_lora_adapter_loads_in_peft(small_backbone, new_tenant, text_emb, results, tmp_path):
    acfg, r = results["lora"]
    path = publish_adapter(r, small_backbone, acfg, root=tmp_path)
    import copy

    plain = peft.PeftModel.from_pretrained(copy.deepcopy(small_backbone.model), str(path))
    seqs = [new_tenant.sequence(u)[:-1] for u in r.split.eval_rows[:8]]
    ours, _ = load_adapter(path, small_backbone.model)
    assert torch.allclose(_scores(plain.base_model.model, text_emb, seqs), _scores(ours, text_emb, seqs), atol=1e-5)


@pytest.mark.parametrize("train_adaptor", [True, False], ids=["adaptor-trained", "adaptor-lowrank"])
def test_peft_made_adapter_loads_in_ours(small_backbone, new_tenant, text_emb, tmp_path, train_adaptor):
    """An adapter trained with plain peft (no manifest) loads through our loader, same scores."""
    from rec.config import LoraConfig

    acfg = AdaptConfig(method="lora", lora=LoraConfig(train_adaptor=train_adaptor))
    model = prepare_model(small_backbone.model, acfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n or ".modules_to_save." in n:
                p.add_(torch.randn_like(p) * 0.05)
    assert any(".adaptor." in n and ("lora_B" in n or "modules_to_save" in n) for n, _ in model.named_parameters())
    model.save_pretrained(str(tmp_path / "peft-adapter"))
    ours, manifest = load_adapter(tmp_path / "peft-adapter", small_backbone.model)
    assert manifest == {}
    seqs = [new_tenant.sequence(u)[:-1] for u in range(5)]
    want = _scores(scoring_backbone(model), text_emb, seqs)
    assert torch.allclose(want, _scores(ours, text_emb, seqs), atol=1e-5)
    assert not torch.allclose(want, _scores(small_backbone.model, text_emb, seqs), atol=1e-3)


def test_concurrent_publishes_get_distinct_versions(small_backbone, results, tmp_path):
    acfg, r = results["head"]
    paths: list = []
    threads = [threading.Thread(target=lambda: paths.append(publish_adapter(r, small_backbone, acfg, root=tmp_path))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in paths) == [f"v{i}" for i in range(1, 7)]


# --- bad input -------------------------------------------------------------------------------
def test_adapter_from_another_backbone_is_refused(small_backbone, results, tmp_path):
    acfg, r = results["head"]
    path = publish_adapter(r, small_backbone, acfg, root=tmp_path)
    with pytest.raises(ArtifactError, match="trained on backbone"):
        load_adapter(path, small_backbone.model, backbone_checksum="0" * 64)


def test_k_larger_than_users(small_backbone, new_tenant, text_emb):
    with pytest.raises(ValueError, match="only .* training users"):
        adapt_tenant(small_backbone, new_tenant, AdaptConfig(k_users=10_000), text_emb=text_emb)


def test_text_embeddings_of_the_wrong_shape_are_refused(small_backbone, new_tenant, text_emb):
    with pytest.raises(ValueError, match=r"text_emb has shape .* expected"):
        adapt_tenant(small_backbone, new_tenant, AdaptConfig(), text_emb=text_emb[:, :100])
    with pytest.raises(ValueError, match=r"text_emb has shape .* expected"):
        adapt_tenant(small_backbone, new_tenant, AdaptConfig(), text_emb=text_emb[:-1])


def test_read_only_embeddings_and_best_epoch(small_backbone, new_tenant, text_emb, results):
    ro = np.array(text_emb)
    ro.setflags(write=False)
    res = adapt_tenant(small_backbone, new_tenant, AdaptConfig(method="head", k_users=16, epochs=2, patience=2), text_emb=ro)
    assert -1 <= res.best_epoch < res.epochs <= 2
    lora = results["lora"][1]
    assert lora.best_epoch == -1 or lora.history[lora.best_epoch]["val_ndcg@10"] == pytest.approx(lora.valid["ndcg@10"])


def test_tenant_without_items_or_text(small_backbone, new_tenant):
    with pytest.raises(DataError, match="catalog is empty"):
        Tenant.from_sequences("empty", [], [], ["u"], [[0]])
    no_text = Tenant.from_sequences(
        "no-text", new_tenant.items.ids, [""] * new_tenant.num_items, new_tenant.users, new_tenant.sequences()
    )
    with pytest.raises(DataError, match="no item text"):
        adapt_tenant(small_backbone, no_text, AdaptConfig(method="lora"))


def test_corrupt_adapter_is_refused(small_backbone, results, tmp_path):
    acfg, r = results["lora"]
    path = publish_adapter(r, small_backbone, acfg, root=tmp_path)
    (path / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="checksum"):
        load_adapter(path, small_backbone.model)
    with pytest.raises(ArtifactError, match="not an adapter folder"):
        load_adapter(tmp_path, small_backbone.model)


@pytest.mark.parametrize("method", ["head", "prompt", "lora", "full"])
def test_warm_start_begins_where_the_saved_adapter_ended(small_backbone, new_tenant, text_emb, results, tmp_path, method):
    """``init_adapter``: the prepared (still trainable) model scores exactly as the saved adapter does."""
    acfg, res = results[method]
    path = publish_adapter(res, small_backbone, acfg, root=tmp_path)
    seqs = [new_tenant.sequence(u)[:-1] for u in range(12)]
    want = _scores(load_adapter(path, small_backbone.model, small_backbone.checksum)[0], text_emb, seqs)
    warm = prepare_model(small_backbone.model, acfg, init_adapter=path)
    assert any(p.requires_grad for p in warm.parameters()), "a warm start still trains"
    cold = _scores(scoring_backbone(prepare_model(small_backbone.model, acfg)), text_emb, seqs)
    assert not torch.allclose(cold, want, atol=1e-4), "the adapter must differ from a fresh start for this test to mean anything"
    assert torch.allclose(_scores(scoring_backbone(warm), text_emb, seqs), want, atol=1e-4)


def test_warm_start_from_an_adapter_that_does_not_fit_is_refused(small_backbone, results, tmp_path):
    acfg, res = results["prompt"]
    path = publish_adapter(res, small_backbone, acfg, root=tmp_path)
    with pytest.raises(ValueError, match="cannot warm-start"):
        prepare_model(small_backbone.model, acfg.model_copy(update={"prompt_length": acfg.prompt_length + 2}), init_adapter=path)
