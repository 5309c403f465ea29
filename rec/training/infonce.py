"""Mixed-domain in-batch InfoNCE: every position's next item against the batch's target items.

The candidates of a training position are the target items of the whole batch, from every tenant
in it (in-batch negatives across domains), scored by cosine at a fixed temperature. An item that
is the target of several positions is one candidate (duplicates are merged, so a position's own
target never appears as its negative). Only the items a batch touches go through the text adaptor,
never a whole catalog, so the cost does not grow with catalog size.

Reference: Y. Hou et al., "Towards Universal Sequence Representation Learning for Recommender
Systems" (UniSRec), KDD 2022, eq. 6: sequence-item contrastive loss with in-batch negatives drawn
from all source domains, cosine similarity, temperature 0.07.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rec.models.backbone import Backbone
from rec.training.batches import PAD
from rec.training.text_tower import TowerText, text_rows

__all__ = ["infonce_loss", "corpus_infonce_loss"]


def infonce_loss(hidden: torch.Tensor, candidates: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE of queries against a shared, de-duplicated candidate set.

    Args:
        hidden: ``(M, D)`` query (sequence) states.
        candidates: ``(U, D)`` distinct candidate item vectors.
        labels: ``(M,)`` index of each query's positive among ``candidates``.
        temperature: Cosine similarities are divided by it.

    Returns:
        Scalar: ``-mean_m log softmax(cos(h_m, c) / temperature)[labels_m]``.
    """
    logits = F.normalize(hidden, dim=-1) @ F.normalize(candidates, dim=-1).T / temperature  # (M, U)
    return F.cross_entropy(logits, labels)


def _touched_items(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sorted distinct item indices ``(K,)`` used as history or target in a tenant's rows."""
    used = torch.cat([inputs[inputs != PAD], targets[targets >= 0]])
    return torch.unique(used)


def corpus_infonce_loss(
    backbone: Backbone,
    tenant_idx: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    text_embs: list[torch.Tensor | TowerText | None],
    temperature: float,
) -> torch.Tensor:
    """InfoNCE of a multi-tenant batch (text backbones only).

    Args:
        tenant_idx: ``(B,)`` tenant of each row; inputs/targets ``(B, T)`` (PAD / -100 ignored),
            all on the backbone's device.
        text_embs: Each tenant's text embeddings ``(N_t, text_dim)``, or a :class:`TowerText` that
            re-encodes the touched items with the LoRA text tower (``rec.training.text_tower``).
        temperature: Cosine temperature (UniSRec: 0.07).

    Returns:
        Scalar mean loss over every target position of the batch.

    Raises:
        ValueError: A tenant in the batch has no text embeddings.
    """
    device = inputs.device
    states, keys, vecs = [], [], []
    key_base = 0
    for t in torch.unique(tenant_idx).tolist():
        emb = text_embs[t]
        if emb is None:
            raise ValueError("model.loss=infonce scores items from text: every tenant needs text embeddings (model.use_text=true)")
        sel = tenant_idx == t
        inp, tgt = inputs[sel], targets[sel]
        used = _touched_items(inp, tgt)  # (K,)
        reps = backbone.item_representations(text_rows(emb, used, device))  # (K, D): only what the batch touches
        local = torch.full((emb.shape[0],), -1, dtype=torch.long, device=device)
        local[used] = torch.arange(len(used), device=device)
        pad = inp == PAD
        # padding reads row 0 (an untouched item maps to -1) and is zeroed: encode masks it anyway
        hist = F.embedding(local[inp.clamp(min=0)].clamp(min=0), reps) * (~pad)[..., None]  # (b, T, D)
        hidden = backbone.encode(hist, pad)
        keep = tgt >= 0
        states.append(hidden[keep])
        # a global key per (tenant, item): the same item as two positions' target is one candidate
        keys.append(local[tgt[keep]] + key_base)
        vecs.append(reps)
        key_base += len(used)
    hidden_all = torch.cat(states)  # (M, D)
    if hidden_all.shape[0] == 0:
        return hidden_all.sum()  # no target in the batch: zero, still attached to the graph
    key_all = torch.cat(keys)  # (M,) index into the concatenated touched items
    cand_keys, labels = torch.unique(key_all, return_inverse=True)  # (U,), (M,)
    candidates = torch.cat(vecs)[cand_keys]  # (U, D): only target items are candidates
    return infonce_loss(hidden_all, candidates, labels, temperature)
