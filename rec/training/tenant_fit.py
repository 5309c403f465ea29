"""The single-tenant training loop: AdamW epochs with early stopping on validation NDCG@10.

Tenant adaptation (``rec.adaptation.adapt.adapt_tenant``) and the from-scratch baselines of the
benchmarks run this one loop, so a baseline differs from adaptation only in its starting model.
No Ray: it runs in the calling process (a Tune trial, a benchmark row, ``rec adapt``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from rec.config import PRIMARY_K
from rec.models.backbone import Backbone
from rec.training.corpus import Corpus, TenantCorpus
from rec.training.early_stopping import EarlyStopping
from rec.training.loop import CorpusLoss, evaluate_tenant, make_optimizer, train_epoch

__all__ = ["FitSettings", "TenantFit", "fit_tenant"]

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class FitSettings:
    """Optimizer, schedule and evaluation of one tenant's training run."""

    epochs: int
    lr: float
    batch_size: int
    patience: int
    seed: int
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ks: tuple[int, ...] = (PRIMARY_K,)
    eval_batch_size: int = 256
    exclude_history: bool = False


@dataclass
class TenantFit:
    """The outcome; the model holds the best epoch's weights (the start when none beat it)."""

    valid: dict[str, float]  # validation metrics of the kept weights
    best_epoch: int  # -1 = no epoch beat the starting weights
    epochs: int  # epochs run (early stopping may end before settings.epochs)
    history: list[dict[str, float]] = field(default_factory=list)


def fit_tenant(
    model: nn.Module,
    scorer: Backbone,
    tenant: TenantCorpus,
    text_emb: torch.Tensor | None,
    params: list[nn.Parameter],
    s: FitSettings,
    regularizer: Callable[[], torch.Tensor] | None = None,
    after_step: Callable[[], None] | None = None,
    on_epoch: EpochCallback | None = None,
    before_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> TenantFit:
    """Train ``params`` on ``tenant``'s training rows; keep the epoch with the best validation NDCG@10.

    Args:
        model: What trains and what early stopping snapshots (a ``PeftModel`` or a ``Backbone``).
        scorer: The backbone that scores (``model`` itself, or the backbone inside a PEFT wrapper).
        tenant: Training rows plus the valid/test rows of its held-out users.
        text_emb: The tenant's item text ``(N, text_dim)``; None for an ID-only model.
        params: The parameters the optimizer updates (nothing trains when empty).
        s: Settings; rows are shuffled by ``(s.seed, epoch)``.
        regularizer: Added to every step's loss (AdaLoRA's orthogonality penalty).
        after_step: Runs after every optimizer step (AdaLoRA's rank allocation).
        on_epoch: Called after every epoch with (epoch, validation metrics): Ray Tune reports here.
        before_batch: Runs before every step's forward with the batch's (inputs, targets) (text-lora).
    """
    corpus = Corpus([tenant], tenant.train_inputs.shape[1], None)

    def validate() -> dict[str, float]:
        return evaluate_tenant(scorer, tenant, text_emb, "valid", list(s.ks), s.eval_batch_size, s.exclude_history)

    stopper = EarlyStopping(model, validate(), s.patience)  # best_epoch -1: the untrained start is kept
    history: list[dict[str, float]] = []
    epochs = 0
    if params and len(tenant.train_inputs):
        loss_model = CorpusLoss(scorer)
        opt = make_optimizer(params, s.lr, s.weight_decay)
        for epoch in range(s.epochs):
            rows = np.random.default_rng([s.seed, epoch]).permutation(len(tenant.train_inputs))
            model.train()
            loss = train_epoch(loss_model, opt, corpus, rows, [text_emb], s.batch_size, s.grad_clip,
                               regularizer=regularizer, after_step=after_step, before_batch=before_batch)
            val = validate()
            epochs = epoch + 1
            history.append({"epoch": epoch, "train_loss": loss, **{f"val_{k}": v for k, v in val.items()}})
            if on_epoch is not None:
                on_epoch(epoch, val)
            if stopper.update(epoch, val, model):
                break
        stopper.restore(model)
    return TenantFit(stopper.best, stopper.best_epoch, epochs, history)
