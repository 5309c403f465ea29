"""A small backbone pretrained in-process (no Ray: adaptation mechanics do not need it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec.config import load_config
from rec.data.synthetic import generate_tenants
from rec.models.backbone import build_backbone
from rec.training.checkpoint import export_backbone, load_backbone
from rec.training.corpus import build_corpus
from rec.training.loop import CorpusLoss, train_epoch
from tests.conftest import tiny_overrides


@pytest.fixture(scope="session")
def small_backbone(tmp_path_factory, text_cache):
    """Backbone pretrained for a few epochs on synthetic tenants 0-1; tenant 2 stays unseen."""
    out = tmp_path_factory.mktemp("backbone")
    cfg = load_config(None, tiny_overrides(out, text_cache, **{"data.synthetic.tenants": 2}))
    corpus = build_corpus(cfg)
    torch.manual_seed(0)
    model = build_backbone(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    embs = [torch.from_numpy(t.text_emb) for t in corpus.tenants]
    loss = CorpusLoss(model)
    for epoch in range(6):
        rows = np.random.default_rng(epoch).permutation(corpus.num_train_rows)
        train_epoch(loss, opt, corpus, rows, embs, 64, 1.0)
    tenants = {t.name: {"id_offset": t.id_offset, "num_items": t.num_items, "data_hash": t.data_hash} for t in corpus.tenants}
    path = export_backbone(out / "checkpoint", model.state_dict(), cfg, tenants, {}, corpus.text_model)
    return load_backbone(path)


@pytest.fixture(scope="session")
def new_tenant(small_backbone):
    """A tenant the backbone never saw (third synthetic tenant)."""
    syn = small_backbone.cfg.data.synthetic.model_copy(update={"tenants": 3})
    return generate_tenants(syn)[2]
