"""Pure training/evaluation steps over a :class:`~rec.training.corpus.Corpus`.

No Ray here: ``ray_train.py`` calls these inside each worker, the benchmarks and tests call them
directly. A batch may mix tenants; each row is scored against its own tenant's catalog.

Device: batches are built on the CPU (numpy) and moved to the device of the model's weights, so
the same functions train on a GPU (``train.use_gpu``: Ray Train puts the model there) and on the
CPU; ranks are computed on the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from rec.metrics import metrics_from_ranks, rank_of_target
from rec.models.backbone import Backbone
from rec.training.batches import PAD
from rec.training.corpus import Corpus, EvalRows, TenantCorpus

__all__ = ["CorpusLoss", "EarlyStopping", "catalog_representations", "iterate_batches", "train_epoch", "evaluate_tenant", "evaluate_corpus"]


def catalog_representations(model: Backbone, tenant: TenantCorpus, text_emb: torch.Tensor | None) -> torch.Tensor:
    """All item vectors ``(N, D)`` of one tenant."""
    # A tenant the model never trained on (id_offset < 0) has no ID rows: text only (zero-shot).
    has_ids = model.id_emb is not None and tenant.id_offset >= 0
    device = next(model.parameters()).device
    ids = torch.arange(tenant.id_offset, tenant.id_offset + tenant.num_items, device=device) if has_ids else None
    return model.item_representations(None if text_emb is None else text_emb.to(device, non_blocking=True), ids)


def _gather(catalog: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Item vectors ``(B, T, D)`` for padded indices ``(B, T)`` and the pad mask ``(B, T)``, both on
    the catalog's device."""
    idx = idx.to(catalog.device, non_blocking=True)
    pad = idx == PAD
    return catalog[idx.clamp(min=0)], pad


class CorpusLoss(nn.Module):
    """Wraps a backbone so one ``forward`` computes the multi-tenant loss of a batch.

    DDP synchronises gradients for what runs inside the wrapped module's ``forward``, so the whole
    loss (catalog representations for every tenant in the batch, encoding, softmax) lives here.
    """

    def __init__(self, backbone: Backbone, loss: str = "ce", num_negatives: int = 256) -> None:
        super().__init__()
        self.backbone, self.loss, self.num_negatives = backbone, loss, num_negatives

    def forward(
        self,
        tenant_idx: torch.Tensor,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        tenants: list[TenantCorpus],
        text_embs: list[torch.Tensor | None],
    ) -> torch.Tensor:
        """Mean loss over target positions. ``tenant_idx (B,)``, ``inputs/targets (B, T)`` (any device:
        moved to the backbone's)."""
        device = next(self.backbone.parameters()).device
        tenant_idx, inputs, targets = (x.to(device, non_blocking=True) for x in (tenant_idx, inputs, targets))
        total, count = inputs.new_zeros((), dtype=torch.float32), 0
        for t in torch.unique(tenant_idx).tolist():
            sel = tenant_idx == t
            catalog = catalog_representations(self.backbone, tenants[t], text_embs[t])
            hist, pad = _gather(catalog, inputs[sel])
            hidden = self.backbone.encode(hist, pad)
            tgt = targets[sel]
            n = int((tgt >= 0).sum())
            if n == 0:
                continue
            if self.loss == "sampled":
                loss = self.backbone.sampled_ce_loss(hidden, tgt, catalog, self.num_negatives)
            else:
                loss = self.backbone.ce_loss(hidden, tgt, catalog)
            total, count = total + loss * n, count + n
        return total / max(count, 1)


class EarlyStopping:
    """Keep the weights of the best validation epoch and stop after ``patience`` epochs without a gain.

    The starting weights count as epoch -1: if no epoch beats them, :meth:`restore` puts them back.
    Shared by tenant adaptation and the from-scratch baselines (pretraining keeps the same counters
    in its checkpointed state, so a restarted Ray Train worker resumes them).
    """

    def __init__(self, model: nn.Module, start: dict[str, float], patience: int, metric: str = "ndcg@10") -> None:
        self.best, self.best_epoch, self.bad = start, -1, 0
        self.patience, self.metric = patience, metric
        self._weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def update(self, epoch: int, val: dict[str, float], model: nn.Module) -> bool:
        """Record ``epoch``'s validation metrics; True when training should stop."""
        if val[self.metric] > self.best[self.metric]:
            self.best, self.best_epoch, self.bad = val, epoch, 0
            self._weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.bad += 1
        return self.bad >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Load the best weights seen (the start if no epoch improved) into ``model``."""
        model.load_state_dict(self._weights)


def iterate_batches(corpus: Corpus, rows: np.ndarray, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield ``(tenant_idx, inputs, targets)`` tensors for the given global training rows."""
    t_idx, r_idx = corpus.row_index()
    for start in range(0, len(rows), batch_size):
        sel = rows[start : start + batch_size]
        ts, rs = t_idx[sel], r_idx[sel]
        inputs = np.stack([corpus.tenants[t].train_inputs[r] for t, r in zip(ts, rs)])
        targets = np.stack([corpus.tenants[t].train_targets[r] for t, r in zip(ts, rs)])
        yield torch.from_numpy(ts), torch.from_numpy(inputs), torch.from_numpy(targets)


def train_epoch(
    loss_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    corpus: Corpus,
    rows: np.ndarray,
    text_embs: list[torch.Tensor | None],
    batch_size: int,
    grad_clip: float,
    regularizer: Callable[[], torch.Tensor] | None = None,
    after_step: Callable[[], None] | None = None,
) -> float:
    """One pass over ``rows``; returns the mean training loss (without ``regularizer``).

    ``regularizer()`` is added to every step's loss; ``after_step()`` runs after every optimizer
    step, gradients still set (AdaLoRA's rank allocation: ``rec.adaptation.methods.lora.training_hooks``).
    """
    loss_model.train()
    losses = []
    for tenant_idx, inputs, targets in iterate_batches(corpus, rows, batch_size):
        loss = loss_model(tenant_idx, inputs, targets, corpus.tenants, text_embs)
        optimizer.zero_grad(set_to_none=True)
        (loss if regularizer is None else loss + regularizer()).backward()
        torch.nn.utils.clip_grad_norm_(loss_model.parameters(), grad_clip)
        optimizer.step()
        if after_step is not None:
            after_step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else math.nan


@torch.no_grad()
def tenant_scores(
    model: Backbone, tenant: TenantCorpus, text_emb: torch.Tensor | None, histories: np.ndarray, batch_size: int
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Full-catalog scores ``(b, N)`` for consecutive slices of padded ``histories``."""
    model.eval()
    catalog = catalog_representations(model, tenant, text_emb)
    for start in range(0, len(histories), batch_size):
        idx = torch.tensor(histories[start : start + batch_size])  # copy: object-store arrays are read-only
        hist, pad = _gather(catalog, idx)
        yield slice(start, start + len(idx)), model.scores(model.user_vector(hist, pad), catalog)


def tenant_ranks(
    model: Backbone,
    tenant: TenantCorpus,
    text_emb: torch.Tensor | None,
    rows: EvalRows,
    batch_size: int = 256,
    exclude_history: bool = False,
) -> np.ndarray:
    """0-based full-ranking rank of each example's target, ``(V,)``."""
    ranks = []
    for sl, scores in tenant_scores(model, tenant, text_emb, rows.histories, batch_size):
        hist = rows.histories[sl]
        exclude = [h[h >= 0] for h in hist] if exclude_history else None
        ranks.append(rank_of_target(scores.cpu().numpy(), rows.targets[sl], exclude=exclude))
    return np.concatenate(ranks) if ranks else np.zeros(0, np.int64)


def evaluate_tenant(
    model: Backbone,
    tenant: TenantCorpus,
    text_emb: torch.Tensor | None,
    split: str = "valid",
    ks: list[int] = (5, 10, 20),  # type: ignore[assignment]
    batch_size: int = 256,
    exclude_history: bool = False,
) -> dict[str, float]:
    """Full-ranking metrics of one tenant on its ``valid`` or ``test`` examples."""
    rows = tenant.valid if split == "valid" else tenant.test
    return metrics_from_ranks(tenant_ranks(model, tenant, text_emb, rows, batch_size, exclude_history), ks=list(ks))


def evaluate_corpus(
    model: Backbone,
    corpus: Corpus,
    text_embs: list[torch.Tensor | None],
    split: str = "valid",
    ks: list[int] = (5, 10, 20),  # type: ignore[assignment]
    batch_size: int = 256,
    exclude_history: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, dict[str, float]]:
    """Per-tenant metrics plus ``"all"`` (user-weighted mean). Sharded over ranks when distributed.

    With ``world_size > 1`` each rank ranks a strided slice of every tenant's examples and the ranks
    are gathered, so all ranks return identical metrics.
    """
    per_tenant_ranks = []
    for t, tc in enumerate(corpus.tenants):
        rows = tc.valid if split == "valid" else tc.test
        mine = EvalRows(rows.user_rows[rank::world_size], rows.histories[rank::world_size], rows.targets[rank::world_size])
        per_tenant_ranks.append(tenant_ranks(model, tc, text_embs[t], mine, batch_size, exclude_history))
    if world_size > 1:
        import torch.distributed as dist

        gathered: list = [None] * world_size
        dist.all_gather_object(gathered, per_tenant_ranks)
        per_tenant_ranks = [np.concatenate([g[t] for g in gathered]) for t in range(len(corpus.tenants))]
    out = {tc.name: metrics_from_ranks(r, ks=list(ks)) for tc, r in zip(corpus.tenants, per_tenant_ranks)}
    out["all"] = metrics_from_ranks(np.concatenate(per_tenant_ranks), ks=list(ks))
    return out
