"""A minimal single-file SASRec in plain PyTorch: the yardstick for ``bench/train_speed.py``.

Deliberately independent of ``rec/`` (only the data arrays come from the project's corpus, so
both implementations see the same leave-one-out split): item embedding + learned positions,
pre-LN causal transformer blocks, full-softmax cross-entropy on every real position, Adam.

It is there to compare against, layer by layer, not to be imported by the library.

References:
    Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018;
    Klenitskiy & Vasilev, "Turning Dross Into Gold Loss", RecSys 2023 (full-softmax CE).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ReferenceSASRec", "reference_train_epoch", "reference_ranks", "reference_matmul_flops"]


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ff1, self.ff2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        # Causal only: padding sits on the left and is zeroed below, so a query never needs its keys.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.out(y.transpose(1, 2).reshape(B, T, D)))
        return x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.ln2(x))))))


class ReferenceSASRec(nn.Module):
    """Item ids ``0..N-1``, padding ``-1`` (the project's convention), left-padded ``(B, T)``."""

    def __init__(self, num_items: int, d: int = 64, layers: int = 2, heads: int = 2, max_len: int = 50,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.d = d
        self.item = nn.Embedding(num_items + 1, d, padding_idx=0)  # row 0 = padding
        self.pos = nn.Embedding(max_len, d)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(d, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        for p in self.parameters():  # SASRec's reference code: xavier-normal for every matrix
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` ids (-1 = pad) -> ``(B, T, D)`` states."""
        real = seq >= 0
        x = self.item(seq + 1) * math.sqrt(self.d) + self.pos.weight[: seq.shape[1]]
        x = self.drop(x) * real[..., None]
        for b in self.blocks:
            x = b(x) * real[..., None]
        return self.ln(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.item.weight[1:].T


def reference_train_epoch(model: ReferenceSASRec, opt: torch.optim.Optimizer, inputs: np.ndarray,
                          targets: np.ndarray, batch_size: int, seed: int) -> float:
    """One shuffled pass; ``inputs``/``targets`` ``(R, T)`` with -1 pad / -100 ignore. Mean loss."""
    model.train()
    x_all, y_all = torch.from_numpy(np.ascontiguousarray(inputs)), torch.from_numpy(np.ascontiguousarray(targets))
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(x_all)))
    losses = []
    for s in range(0, len(perm), batch_size):
        idx = perm[s : s + batch_size]
        x, y = x_all[idx], y_all[idx]
        keep = y >= 0
        h = model.hidden(x)[keep]  # (M, D): only positions with a next item
        loss = F.cross_entropy(model.logits(h), y[keep])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return float(torch.stack(losses).mean())


@torch.no_grad()
def reference_ranks(model: ReferenceSASRec, histories: np.ndarray, targets: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """0-based full-ranking rank of each target (ties optimistic, as ``rec.metrics.rank_of_target``)."""
    model.eval()
    out = []
    for s in range(0, len(histories), batch_size):
        h = model.hidden(torch.from_numpy(np.ascontiguousarray(histories[s : s + batch_size])))[:, -1]
        scores = model.logits(h)
        t = torch.from_numpy(targets[s : s + batch_size])
        out.append((scores > scores.gather(1, t[:, None])).sum(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def reference_matmul_flops(tokens: int, scored: int, num_items: int, d: int, layers: int, T: int) -> float:
    """Forward+backward matmul FLOPs of one epoch (x3 forward: backward needs two matmuls per one).

    ``tokens``: positions encoded (B*T summed over batches); ``scored``: positions with a target.
    Per token and layer: qkv 3d^2, out d^2, FFN 4d^2 (hidden 2d), attention 2*T*d (QK^T and AV,
    causal: half of that is computed by a fused kernel, counted in full here). Logits: d*N per
    scored position. Each multiply-add = 2 FLOPs.
    """
    per_token = layers * (8 * d * d + 2 * T * d)
    return 3 * 2 * (tokens * per_token + scored * d * num_items)
