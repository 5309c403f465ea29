"""Pretraining on a real local Ray (Train V2, TorchTrainer, DDP over gloo)."""

from __future__ import annotations

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
