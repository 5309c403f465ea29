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
import torch.nn.functional as F
from torch import nn

from rec.metrics import metrics_from_ranks, rank_of_target
from rec.models.backbone import Backbone
from rec.training.batches import PAD
from rec.training.corpus import Corpus, EvalRows, TenantCorpus
from rec.training.infonce import corpus_infonce_loss
from rec.training.text_tower import TowerText

__all__ = ["CorpusLoss", "make_optimizer", "catalog_representations", "iterate_batches", "trim_padding", "train_epoch",
           "evaluate_tenant", "evaluate_corpus"]


def catalog_representations(model: Backbone, tenant: TenantCorpus, text_emb: torch.Tensor | None) -> torch.Tensor:
    """All item vectors ``(N, D)`` of one tenant."""
    # A tenant the model never trained on (id_offset < 0) has no ID rows: text only (zero-shot).
    has_ids = model.id_emb is not None and tenant.id_offset >= 0
    # A slice of the ID table, not a lookup of arange(N): same rows, no gather, and its gradient is
    # a plain slice copy instead of an index-add over the whole catalog.
    ids = slice(tenant.id_offset, tenant.id_offset + tenant.num_items) if has_ids else None
    if text_emb is not None:
        text_emb = text_emb.to(next(model.parameters()).device, non_blocking=True)
    return model.item_representations(text_emb, ids)


def _gather(catalog: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Item vectors ``(B, T, D)`` for padded indices ``(B, T)`` and the pad mask ``(B, T)``, both on
    the catalog's device."""
    idx = idx.to(catalog.device, non_blocking=True)
    pad = idx == PAD
    # F.embedding, not catalog[idx]: same forward, but its backward is a dense embedding backward,
    # ~7x cheaper on CPU than the index_put(accumulate=True) that advanced indexing backpropagates to.
    return F.embedding(idx.clamp(min=0), catalog), pad


class CorpusLoss(nn.Module):
    """Wraps a backbone so one ``forward`` computes the multi-tenant loss of a batch.

    DDP synchronises gradients for what runs inside the wrapped module's ``forward``, so the whole
    loss (catalog representations for every tenant in the batch, encoding, softmax) lives here.
    """

    def __init__(self, backbone: Backbone, loss: str = "ce", num_negatives: int = 256, infonce_temperature: float = 0.07,
                 text_tower: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone, self.loss, self.num_negatives = backbone, loss, num_negatives
        self.infonce_temperature = infonce_temperature
        # The LoRA text tower the batch's TowerTexts run (train.text_lora): a submodule, so DDP
        # synchronises its gradients and parameters() (clipping, the optimizer) covers it.
        self.text_tower = text_tower

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
        if self.loss == "infonce":  # in-batch negatives across tenants: one softmax over the whole batch
            return corpus_infonce_loss(self.backbone, tenant_idx, inputs, targets, text_embs, self.infonce_temperature)
        if any(isinstance(e, TowerText) for e in text_embs):
            raise ValueError("LoRA on the text encoder trains on the items a batch touches: set model.loss=infonce "
                             f"(in-batch negatives), not {self.loss!r}")
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


def make_optimizer(params, lr: float, weight_decay: float = 0.0, kind: str = "adamw") -> torch.optim.Optimizer:  # noqa: ANN001
    """AdamW with torch's fused kernel where it exists (CPU and CUDA float parameters), or plain SGD.

    AdamW: same update as the default per-parameter loop; fused took an optimizer step plus gradient
    clipping of the 2-layer, 64-d backbone from 2.3 to 0.7 ms on this CPU (the default loop
    launches ~10 small ops per parameter tensor). ``kind="sgd"`` (no momentum) is what a step must
    be when it has to stay proportional to the gradient (federated clients under client-level DP,
    DP-SGD; docs/federated-privacy.md).

    Raises:
        ValueError: ``kind`` is neither ``adamw`` nor ``sgd``.
    """
    params = list(params)  # every parameter, as torch.optim.AdamW(model.parameters()) takes them: same state_dict layout
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if kind != "adamw":
        raise ValueError(f"optimizer {kind!r}: choose 'adamw' or 'sgd'")
    fused = bool(params) and all(
        isinstance(p, torch.Tensor) and p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params
    )
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def trim_padding(inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the leading columns that are padding in every row of a left-padded batch ``(B, T)``.

    Exact for the model: positions count from each row's first real item and padded keys are
    masked, so the real positions' outputs do not change; targets share the inputs' padding. On
    short-sequence data (Amazon: median length 6 in a window of 50) most columns are padding.
    """
    real = (inputs != PAD).any(axis=0)
    first = int(real.argmax()) if real.any() else inputs.shape[1] - 1
    return inputs[:, first:], targets[:, first:]


def iterate_batches(corpus: Corpus, rows: np.ndarray, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield ``(tenant_idx, inputs, targets)`` tensors for the given global training rows.

    ``inputs``/``targets`` are ``(b, T')`` with ``T' <= T``: columns that are padding in every row
    of the batch are dropped (:func:`trim_padding`).
    """
    t_idx, r_idx = corpus.row_index()
    for start in range(0, len(rows), batch_size):
        sel = rows[start : start + batch_size]
        ts, rs = t_idx[sel], r_idx[sel]
        inputs = np.empty((len(sel), corpus.max_len), np.int64)
        targets = np.empty_like(inputs)
        for t in np.unique(ts):  # one fancy-index gather per tenant, not one copy per row
            mine = ts == t
            inputs[mine] = corpus.tenants[t].train_inputs[rs[mine]]
            targets[mine] = corpus.tenants[t].train_targets[rs[mine]]
        inputs, targets = trim_padding(inputs, targets)
        yield torch.from_numpy(ts), torch.from_numpy(np.ascontiguousarray(inputs)), torch.from_numpy(np.ascontiguousarray(targets))


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
    before_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> float:
    """One pass over ``rows``; returns the mean training loss (without ``regularizer``).

    ``regularizer()`` is added to every step's loss; ``after_step()`` runs after every optimizer
    step, gradients still set (AdaLoRA's rank allocation: ``rec.adaptation.methods.lora.training_hooks``);
    ``before_batch(inputs, targets)`` runs before every forward (text-lora picks the items to re-encode).
    """
    loss_model.train()
    losses = []
    for tenant_idx, inputs, targets in iterate_batches(corpus, rows, batch_size):
        if before_batch is not None:
            before_batch(inputs, targets)
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
        exclude = rows.seen_items(sl) if exclude_history else None  # the whole history, not only the window
        ranks.append(rank_of_target(scores.cpu().numpy(), rows.targets[sl], exclude=exclude))
    return np.concatenate(ranks) if ranks else np.zeros(0, np.int64)


#: Cut-offs every evaluation reports on top of the caller's (issue 16: NDCG/Recall@10 and @20 in every row).
ALWAYS_KS = (10, 20)


def reported_ks(ks: list[int] | tuple[int, ...]) -> list[int]:
    """The caller's cut-offs plus :data:`ALWAYS_KS`, sorted."""
    return sorted(set(ks) | set(ALWAYS_KS))


def evaluate_tenant(
    model: Backbone,
    tenant: TenantCorpus,
    text_emb: torch.Tensor | None,
    split: str = "valid",
    ks: list[int] = (5, 10, 20),  # type: ignore[assignment]
    batch_size: int = 256,
    exclude_history: bool = False,
) -> dict[str, float]:
    """Full-ranking metrics of one tenant on its ``valid`` or ``test`` examples: every cut-off of
    :func:`reported_ks` plus ``auc``."""
    rows = tenant.valid if split == "valid" else tenant.test
    ranks = tenant_ranks(model, tenant, text_emb, rows, batch_size, exclude_history)
    return metrics_from_ranks(ranks, ks=reported_ks(ks), num_items=tenant.num_items)


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
    """Per-tenant metrics plus ``"all"`` (user-weighted mean; ``auc`` per user over that user's own
    catalog). Cut-offs: :func:`reported_ks`. Sharded over ranks when distributed.

    With ``world_size > 1`` each rank ranks a strided slice of every tenant's examples and the ranks
    are gathered, so all ranks return identical metrics.
    """
    per_tenant_ranks = []
    for t, tc in enumerate(corpus.tenants):
        rows = tc.valid if split == "valid" else tc.test
        mine = rows.take(slice(rank, None, world_size))
        per_tenant_ranks.append(tenant_ranks(model, tc, text_embs[t], mine, batch_size, exclude_history))
    if world_size > 1:
        import torch.distributed as dist

        gathered: list = [None] * world_size
        dist.all_gather_object(gathered, per_tenant_ranks)
        per_tenant_ranks = [np.concatenate([g[t] for g in gathered]) for t in range(len(corpus.tenants))]
    ks = reported_ks(ks)
    out = {tc.name: metrics_from_ranks(r, ks=ks, num_items=tc.num_items) for tc, r in zip(corpus.tenants, per_tenant_ranks)}
    sizes = np.concatenate([np.full(len(r), tc.num_items) for tc, r in zip(corpus.tenants, per_tenant_ranks)])
    out["all"] = metrics_from_ranks(np.concatenate(per_tenant_ranks), ks=ks, num_items=sizes)
    return out
