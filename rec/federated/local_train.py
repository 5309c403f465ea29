"""One client's local update: a few epochs of the adaptation loss on its own sequences.

The optimizer step is the one every adaptation runs (``rec.training.loop``: ``CorpusLoss``,
``make_optimizer``, ``train_epoch``); a client has no held-out users, so there is no early
stopping: it trains ``epochs`` epochs from the global adapter and returns the result. FedProx's
proximal term ``mu/2 * ||w - w_global||^2`` enters through ``train_epoch``'s ``regularizer``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rec.training.batches import next_item_examples
from rec.training.corpus import Corpus, EvalRows, TenantCorpus
from rec.training.loop import CorpusLoss, make_optimizer, train_epoch

__all__ = ["LocalSettings", "LocalUpdate", "client_corpus", "train_locally"]


@dataclass(frozen=True)
class LocalSettings:
    """How a client trains in one round (from ``adapt.*`` and ``fed.*``)."""

    epochs: int
    lr: float
    batch_size: int
    seed: int
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    proximal_mu: float = 0.0
    optimizer: str = "adamw"  # fed.local_optimizer: adamw or sgd (also DP-SGD's, under local_dp)
    local_dp: bool = False
    local_noise_multiplier: float = 1.0
    local_max_grad_norm: float = 1.0
    local_delta: float = 1e-5  # example-level delta of local DP-SGD (1 / the tenant's training users)


@dataclass(frozen=True)
class LocalUpdate:
    num_examples: int  # training rows (sequences with >= 2 items) the client trained on
    train_loss: float


def client_corpus(seqs: list[np.ndarray], num_items: int, max_len: int, name: str = "client") -> TenantCorpus:
    """A client's training rows as a :class:`TenantCorpus` (no evaluation rows: a client holds none)."""
    inputs, targets = next_item_examples(seqs, max_len)
    none = EvalRows(np.zeros(0, np.int64), np.zeros((0, max_len), np.int64), np.zeros(0, np.int64))
    return TenantCorpus(name=name, num_items=num_items, id_offset=-1, text_emb=None, train_inputs=inputs,
                        train_targets=targets, valid=none, test=none,
                        item_popularity=np.zeros(num_items, np.float32), data_hash="")


def _proximal(params: list[tuple[str, nn.Parameter]], mu: float):  # noqa: ANN202 - the regularizer callable
    start = [p.detach().clone() for _, p in params]

    def term() -> torch.Tensor:
        return 0.5 * mu * sum(((p - s) ** 2).sum() for (_, p), s in zip(params, start))

    return term


def train_locally(model: nn.Module, scorer: nn.Module, corpus: TenantCorpus, text_emb: torch.Tensor,
                  s: LocalSettings, round_seed: int, sequences: list[np.ndarray] | None = None) -> LocalUpdate:
    """Train ``model``'s trainable parameters on ``corpus`` in place for ``s.epochs`` epochs.

    Args:
        model: The prepared adapter model (``rec.adaptation.prepare.prepare_model``), holding the
            global adapter of this round.
        scorer: Its scoring backbone (``scoring_backbone(model)``).
        corpus: The client's rows (:func:`client_corpus`).
        text_emb: The tenant's item text ``(N, text_dim)``.
        round_seed: Mixed into the row shuffle, so rounds differ but a rerun is identical.
        sequences: The client's users' sequences (what ``corpus`` was built from); local DP-SGD
            needs them, one example per user.
    """
    rows_total = len(corpus.train_inputs)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if rows_total == 0 or not named:
        return LocalUpdate(0, float("nan"))
    if s.local_dp:
        if sequences is None:
            raise ValueError("local DP-SGD needs the client's sequences (one example per user)")
        from rec.federated.privacy import private_local_train  # Opacus: only when local DP is on

        model.train()  # Opacus refuses a model in eval mode
        private_local_train(model, sequences, text_emb=text_emb, max_len=corpus.train_inputs.shape[1], lr=s.lr, epochs=s.epochs,
                            batch_size=s.batch_size, max_grad_norm=s.local_max_grad_norm, delta=s.local_delta,
                            noise_multiplier=s.local_noise_multiplier, optimizer=s.optimizer, seed=s.seed * 1_000_003 + round_seed)
        model.eval()
        return LocalUpdate(rows_total, float("nan"))  # DP-SGD reports no loss: its batches are noise-dominated
    train = Corpus([corpus], corpus.train_inputs.shape[1], None)
    loss_model = CorpusLoss(scorer)
    opt = make_optimizer([p for _, p in named], s.lr, s.weight_decay, kind=s.optimizer)
    regularizer = _proximal(named, s.proximal_mu) if s.proximal_mu > 0 else None
    losses = []
    for epoch in range(s.epochs):
        rows = np.random.default_rng([s.seed, round_seed, epoch]).permutation(rows_total)
        model.train()
        losses.append(train_epoch(loss_model, opt, train, rows, [text_emb], s.batch_size, s.grad_clip, regularizer=regularizer))
    model.eval()
    return LocalUpdate(rows_total, float(np.mean(losses)))
