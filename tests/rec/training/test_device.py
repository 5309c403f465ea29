"""The training loop runs where the model's weights are: the CPU here, a GPU with ``train.use_gpu``.

The CUDA cases run on a machine whose torch sees a GPU and are skipped elsewhere (CI has none).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec.config import ModelConfig
from rec.data.schema import ItemTable, Tenant
from rec.models.backbone import build_backbone
from rec.training.batches import shard_rows
from rec.training.corpus import Corpus, tenant_corpus
from rec.training.loop import CorpusLoss, evaluate_corpus, train_epoch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no GPU here")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def _tenant(name: str, n_items: int, n_users: int, seed: int) -> Tenant:
    """Users walk the catalog: item i is followed by item i+1 (a pattern a model can learn)."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, n_users)
    seqs = [(s + np.arange(8)) % n_items for s in starts]
    items = ItemTable(np.array([f"{name}-{i}" for i in range(n_items)]), [f"{name} item {i}" for i in range(n_items)])
    offsets = np.arange(0, 8 * n_users + 1, 8)
    return Tenant(name, items, np.array([f"u{u}" for u in range(n_users)]), offsets, np.concatenate(seqs), np.zeros(8 * n_users, np.int64))


def _corpus(text_dim: int) -> Corpus:
    rng = np.random.default_rng(0)
    tenants, offset = [], 0
    for i, n in enumerate((40, 25)):
        t = _tenant(f"walk{i}", n, 120, i)
        emb = rng.normal(size=(n, text_dim)).astype(np.float32)
        tenants.append(tenant_corpus(t, emb / np.linalg.norm(emb, axis=1, keepdims=True), offset, 10, None, 0))
        offset += n
    return Corpus(tenants, 10, "random-text")


def _train(device: str, epochs: int) -> tuple[list[float], dict, dict]:
    corpus = _corpus(16)
    torch.manual_seed(0)
    model = build_backbone(ModelConfig(text_dim=16, d_model=16, n_heads=2, dropout=0.0, max_len=10)).to(device)
    embs = [torch.from_numpy(t.text_emb).to(device) for t in corpus.tenants]
    before = evaluate_corpus(model, corpus, embs, "test", ks=[10])
    loss_model = CorpusLoss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = [train_epoch(loss_model, opt, corpus, shard_rows(corpus.num_train_rows, e, 0, 0, 1), embs, 32, 1.0) for e in range(epochs)]
    after = evaluate_corpus(model, corpus, embs, "test", ks=[10])
    assert all(p.device.type == device for p in model.parameters())
    return losses, before, after


@pytest.mark.parametrize("device", DEVICES)
def test_loop_trains_and_ranks_on_the_models_device(device: str) -> None:
    losses, before, after = _train(device, 8)
    assert losses[-1] < 0.5 * losses[0]
    assert after["all"]["ndcg@10"] > before["all"]["ndcg@10"] + 0.2


@CUDA
def test_cuda_training_follows_cpu_training() -> None:
    """Same seed, same batches: the GPU run computes what the CPU run computes (fp32, no TF32)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        cpu, _, cpu_after = _train("cpu", 2)
        gpu, _, gpu_after = _train("cuda", 2)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    assert gpu == pytest.approx(cpu, rel=1e-3)
    assert gpu_after["all"]["ndcg@10"] == pytest.approx(cpu_after["all"]["ndcg@10"], abs=0.02)
