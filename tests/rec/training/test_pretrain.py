"""Pretraining on a real local Ray (Train V2, TorchTrainer, DDP over gloo)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rec.config import load_config
from rec.io.artifacts import read_manifest
from rec.metrics import metrics_from_ranks, rank_of_target
from rec.training.checkpoint import load_backbone
from rec.training.corpus import build_corpus
from rec.training.ray_train import pretrain
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_worker_run(ray_local, tmp_path_factory, text_cache):
    out = tmp_path_factory.mktemp("pretrain")
    cfg = load_config(None, tiny_overrides(out, text_cache, **{"train.num_workers": 2, "train.epochs": 4}))
    corpus = build_corpus(cfg)
    return cfg, corpus, pretrain(cfg, corpus=corpus)


def _popularity_ndcg(corpus) -> float:
    ranks = []
    for t in corpus.tenants:
        scores = np.tile(t.item_popularity, (len(t.test.targets), 1))
        ranks.append(rank_of_target(scores, t.test.targets))
    return metrics_from_ranks(np.concatenate(ranks), ks=[10])["ndcg@10"]


def test_two_workers_train_and_beat_popularity(two_worker_run):
    cfg, corpus, res = two_worker_run
    assert res.epochs == 4 and len(res.history) == 4
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < losses[0]
    assert res.test_metrics["all"]["ndcg@10"] > 1.5 * _popularity_ndcg(corpus)
    assert set(res.test_metrics) == {t.name for t in corpus.tenants} | {"all"}


def test_checkpoint_artifact_roundtrip(two_worker_run):
    cfg, corpus, res = two_worker_run
    manifest = read_manifest(res.checkpoint, kind="backbone")
    assert manifest["text_model"] and manifest["data_hashes"] == corpus.data_hashes()
    assert manifest["metrics"]["test"]["all"]["ndcg@10"] == pytest.approx(res.test_metrics["all"]["ndcg@10"])
    loaded = load_backbone(res.checkpoint)
    assert loaded.cfg == cfg
    # the loaded model reproduces the reported test metrics
    from rec.training.loop import evaluate_corpus

    embs = [torch.from_numpy(t.text_emb) for t in corpus.tenants]
    again = evaluate_corpus(loaded.model, corpus, embs, "test", [5, 10, 20])
    assert again["all"]["ndcg@10"] == pytest.approx(res.test_metrics["all"]["ndcg@10"], abs=1e-6)


def test_resume_continues_from_last_checkpoint(two_worker_run, ray_local):
    """Re-running the same run with more epochs resumes instead of starting over."""
    cfg, corpus, res = two_worker_run
    more = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 5})})
    res2 = pretrain(more, corpus=corpus)
    assert [h["epoch"] for h in res2.history] == [0, 1, 2, 3, 4]
    assert res2.history[-1]["resumed_from"] == 3  # only epoch 4 ran in the second call


def test_early_stopping(ray_local, tmp_path, text_cache):
    # lr=0 cannot improve after the first epoch: patience 1 stops at epoch 2 of 10
    cfg = load_config(None, tiny_overrides(tmp_path, text_cache, **{"train.epochs": 10, "train.patience": 1, "train.lr": 1e-12}))
    res = pretrain(cfg)
    assert res.epochs == 2 and res.history[-1]["early_stopped"]


# --- transfer validation: held-out tenants select the checkpoint -----------------------------------
def _holdout_overrides(tmp_path, text_cache, datasets_dir, **extra):
    return tiny_overrides(tmp_path, text_cache, **{
        "data.holdout": f'[{{format: movielens-100k, path: "{datasets_dir / "ml-100k"}", name: ml-100k, max_users: 200}}]',
        "train.select_on": "holdout", "train.epochs": 2, "train.patience": 2, "train.max_eval_users": 200, **extra})


def test_holdout_tenants_select_the_checkpoint(ray_local, tmp_path, text_cache, datasets_dir):
    """Every epoch ranks the real held-out tenant zero-shot; the best of init + epochs is published."""
    from rec.models.backbone import build_backbone
    from rec.training.loop import evaluate_corpus

    cfg = load_config(None, _holdout_overrides(tmp_path, text_cache, datasets_dir))
    corpus = build_corpus(cfg)
    assert [t.name for t in corpus.holdout] == ["ml-100k"] and len(corpus.holdout[0].train_inputs) == 0
    assert corpus.holdout[0].id_offset == -1 and "ml-100k" not in corpus.data_hashes()
    res = pretrain(cfg, corpus=corpus)
    init, *epochs = res.history
    assert init["epoch"] == -1 and [h["epoch"] for h in epochs] == [0, 1]
    scores = [h["holdout_ndcg@10"] for h in res.history]
    assert all("val_ndcg@10" in h and h["selected_on"] == "holdout" for h in epochs)
    assert res.best_epoch == int(np.argmax(scores)) - 1  # strict improvement needed: first max wins
    # the published weights reproduce the selected score on the held-out tenant
    held = corpus.holdout_corpus()
    embs = [torch.from_numpy(t.text_emb) for t in held.tenants]
    loaded = load_backbone(res.checkpoint)
    assert evaluate_corpus(loaded.model, held, embs, "valid", [10])["all"]["ndcg@10"] == pytest.approx(max(scores), abs=1e-6)
    manifest = read_manifest(res.checkpoint, kind="backbone")
    assert manifest["metrics"]["selected_on"] == "holdout" and manifest["metrics"]["best_epoch"] == res.best_epoch
    assert set(manifest["metrics"]["holdout_test"]) == {"ml-100k", "all"} and "ml-100k" in manifest["holdout_tenants"]
    if res.best_epoch == -1:  # pretraining did not transfer: the init itself is published
        torch.manual_seed(cfg.train.seed)
        init_model = build_backbone(cfg.model, num_item_ids=corpus.num_item_ids)
        assert all(torch.equal(a, b) for a, b in zip(init_model.state_dict().values(), loaded.model.state_dict().values()))


def test_infonce_balanced_run_selects_on_the_mean_of_several_holdout_tenants(ray_local, tmp_path, text_cache, datasets_dir):
    """model.loss=infonce with balanced batches trains through Ray Train, and two held-out tenants
    (different sizes) choose the checkpoint by the mean of their NDCG@10, each counting once."""
    ml = datasets_dir / "ml-100k"
    cfg = load_config(None, _holdout_overrides(tmp_path, text_cache, datasets_dir, **{
        "data.holdout": f'[{{format: movielens-100k, path: "{ml}", name: ml-a, max_users: 200}}, '
                        f'{{format: movielens-100k, path: "{ml}", name: ml-b, max_users: 60, seed: 1}}]',
        "model.loss": "infonce", "train.mixture": "balanced", "train.batch_size": 64}))
    res = pretrain(cfg)
    means = [(h["holdout_ml-a_ndcg@10"] + h["holdout_ml-b_ndcg@10"]) / 2 for h in res.history]
    assert all(np.isfinite(h["train_loss"]) for h in res.history[1:])
    assert res.best_epoch == int(np.argmax(means)) - 1
    assert res.history[-1]["best_val_ndcg@10"] == pytest.approx(max(means), abs=1e-9)


def test_holdout_bad_configs_say_what_to_do(tmp_path, text_cache, datasets_dir):
    from rec.config import ConfigError
    from rec.data.schema import DataError

    with pytest.raises(ConfigError, match="needs held-out tenants: add data.holdout"):
        load_config(None, tiny_overrides(tmp_path, text_cache, **{"train.select_on": "holdout"}))
    with pytest.raises(ConfigError, match="ranked zero-shot from item text"):
        load_config(None, _holdout_overrides(tmp_path, text_cache, datasets_dir, **{"model.use_text": "false", "model.use_id_embedding": "true"}))
    cfg = load_config(None, _holdout_overrides(tmp_path, text_cache, datasets_dir))
    from rec.data.loaders import load_source
    from rec.data.synthetic import generate_tenants

    tenants = generate_tenants(cfg.data.synthetic)
    clash = dataclasses.replace(load_source(cfg.data.holdout[0], min_seq_len=3), name=tenants[0].name)
    with pytest.raises(DataError, match="both trained on and held out"):
        build_corpus(cfg, tenants=tenants, holdout=[clash])


def test_lr_decays_on_a_plateau_and_a_resumed_run_decays_where_a_straight_one_would(ray_local, tmp_path, text_cache):
    # lr 1e-12 cannot move validation after epoch 1: every later epoch is a plateau epoch
    extra = {"train.lr": 1e-12, "train.lr_decay": 0.5, "train.lr_decay_patience": 1, "train.min_lr": 0.0, "train.patience": 5}
    cfg = load_config(None, tiny_overrides(tmp_path, text_cache, **{**extra, "train.epochs": 3}))
    corpus = build_corpus(cfg)
    pretrain(cfg, corpus=corpus)
    more = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 10})})
    res = pretrain(more, corpus=corpus)
    assert res.history[-1]["resumed_from"] == 2 and res.history[-1]["early_stopped"]
    # no gain after epoch 1: decays after the 2nd and 4th plateau epochs; early stopping after the 5th
    assert [h["lr"] / 1e-12 for h in res.history] == pytest.approx([1, 1, 1, 0.5, 0.5, 0.25])


def test_lr_decay_must_come_before_early_stopping(tmp_path, text_cache):
    with pytest.raises(ValueError, match="lr_decay_patience=3 >= train.patience=3"):
        load_config(None, tiny_overrides(tmp_path, text_cache, **{"train.lr_decay": 0.5, "train.lr_decay_patience": 3, "train.patience": 3}))
