"""Pruning of the encoder's linear layers.

- ``magnitude_prune``: global L1 unstructured pruning (Han et al., "Learning both Weights and
  Connections for Efficient Neural Networks", NeurIPS 2015) over every ``nn.Linear`` of the
  transformer blocks, with ``torch.nn.utils.prune`` (masks stay attached during the recovery
  fine-tune, ``make_permanent`` bakes them in). Dense ONNX storage does not shrink: the gain is
  compressibility and sparse kernels, not file size.
- ``ffn_prune``: structured pruning of FFN hidden units by the product of their input-row and
  output-column L2 norms (a common importance proxy, cf. Michel et al., "Are Sixteen Heads Really
  Better than One?", NeurIPS 2019, for the structured view). Layers are rebuilt smaller, so the
  exported model is really smaller and faster.

``recover`` fine-tunes the encoder for a few epochs with the adaptor frozen (catalogs unchanged).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from rec.models.backbone import Backbone
from rec.training.corpus import Corpus

__all__ = ["magnitude_prune", "make_permanent", "ffn_prune", "sparsity", "recover"]


def _encoder_linears(model: Backbone) -> list[nn.Linear]:
    return [m for m in model.blocks.modules() if isinstance(m, nn.Linear)]


def magnitude_prune(model: Backbone, amount: float) -> Backbone:
    """A copy of ``model`` with the smallest ``amount`` fraction of encoder weights masked to zero."""
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    model = copy.deepcopy(model)
    prune.global_unstructured([(m, "weight") for m in _encoder_linears(model)], pruning_method=prune.L1Unstructured, amount=amount)
    return model


def make_permanent(model: Backbone) -> Backbone:
    """Bake the pruning masks into the weights (removes the reparametrisation hooks), in place."""
    for m in _encoder_linears(model):
        if prune.is_pruned(m):
            prune.remove(m, "weight")
    return model


def sparsity(model: Backbone) -> float:
    """Fraction of exactly-zero weights over the encoder's linear layers."""
    ws = [m.weight.detach() for m in _encoder_linears(model)]
    return float(sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws))


def ffn_prune(model: Backbone, keep: float) -> Backbone:
    """A copy of ``model`` whose FFNs keep the ``keep`` fraction of hidden units with the largest norms."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    model = copy.deepcopy(model)
    for block in model.blocks:
        fc1, fc2 = block.ffn.fc1, block.ffn.fc2
        score = fc1.weight.detach().norm(dim=1) * fc2.weight.detach().norm(dim=0)  # (hidden,)
        n = max(1, int(round(keep * fc1.out_features)))
        idx = torch.sort(torch.topk(score, n).indices).values
        new1, new2 = nn.Linear(fc1.in_features, n), nn.Linear(n, fc2.out_features)
        with torch.no_grad():
            new1.weight.copy_(fc1.weight[idx])
            new1.bias.copy_(fc1.bias[idx])
            new2.weight.copy_(fc2.weight[:, idx])
            new2.bias.copy_(fc2.bias)
        block.ffn.fc1, block.ffn.fc2 = new1, new2
    return model


def recover(
    model: Backbone,
    corpus: Corpus,
    loss_model: nn.Module | None = None,
    epochs: int = 2,
    lr: float = 5e-4,
    batch_size: int = 128,
    seed: int = 0,
) -> list[float]:
    """Short fine-tune of the encoder (adaptor and ID table frozen), in place; returns epoch losses.

    ``loss_model`` defaults to the training loss (``CorpusLoss``); pass a ``DistillLoss`` to
    recover from the teacher instead.
    """
    from rec.training.loop import CorpusLoss, train_epoch
    from rec.training.scaffold import text_embeddings

    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(("adaptor.", "id_emb.")))
    loss_model = loss_model or CorpusLoss(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    embs = text_embeddings(corpus.tenants)
    losses = []
    for epoch in range(epochs):
        rows = np.random.default_rng([seed, epoch]).permutation(corpus.num_train_rows)
        losses.append(train_epoch(loss_model, opt, corpus, rows, embs, batch_size, grad_clip=1.0))
    model.eval()
    return losses
