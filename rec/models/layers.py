"""Transformer building blocks for the sequence encoder.

Written out (nanoGPT style) instead of ``nn.TransformerEncoderLayer`` for two reasons: every
projection is a plain ``nn.Linear`` named ``q_proj``/``k_proj``/``v_proj``/``o_proj``/``fc1``/``fc2``
so PEFT LoRA can target it by name, and the attention mask is built from a padding mask at run
time, so the ONNX dynamo export keeps batch and sequence length dynamic.

Sequences are LEFT-padded: the most recent item is always at position ``T-1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Dropout", "dropout", "CausalSelfAttention", "FeedForward", "TransformerBlock", "attention_mask", "attention_bias",
           "additive_mask_attention", "positions"]


def attention_mask(pad: torch.Tensor) -> torch.Tensor:
    """Boolean mask ``(B, 1, T, T)``: True where query t may attend key s.

    Causal (s <= t) and key not padding. Every query may also attend to itself, so padded query
    rows never become all-masked (which would give NaN in softmax); their outputs are ignored.

    Args:
        pad: ``(B, T)`` bool, True at padding positions.
    """
    T = pad.shape[1]
    idx = torch.arange(T, device=pad.device)
    causal = idx[None, :] <= idx[:, None]  # (T, T)
    allowed = causal[None, :, :] & ~pad[:, None, :]  # (B, T, T)
    allowed = allowed | torch.eye(T, dtype=torch.bool, device=pad.device)[None]
    return allowed[:, None, :, :]


def attention_bias(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The boolean ``mask`` of :func:`attention_mask` as an additive float mask: 0 allowed, dtype min not.

    Same attention as the boolean mask (every query row keeps at least itself, so no row is all
    masked and the masked keys get zero weight). The serving graph uses it: the ONNX
    exporter lowers boolean-mask ``scaled_dot_product_attention`` with a ``Where(IsNaN)`` guard
    against all-masked rows after every softmax, a float mask without it (measured in
    bench/README.md, compression section).
    """
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.full((), torch.finfo(dtype).min, dtype=dtype, device=mask.device))


#: Logits more than this far below their row's maximum are raised to that floor before the softmax.
#: Their weight stays e^-60 ~ 1e-26 of the row maximum's, zero at float32 precision; without the
#: floor, masked logits (dtype min) send ONNX Runtime's CPU exp down a denormal slow path, which ran
#: the serving graph's softmax 7x slower (bench/README.md, compression section).
LOGIT_FLOOR = 60.0


def additive_mask_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Dot-product attention ``softmax(q k^T / sqrt(d) + bias) v`` with an additive float mask, written out.

    ``q (B,h,S,d)``, ``k``/``v (B,h,T,d)``, ``bias`` broadcastable to ``(B,h,S,T)`` (see
    :func:`attention_bias`). Same values as ``F.scaled_dot_product_attention`` with the boolean mask
    up to rounding: every row keeps its own position, and masked keys get weight e^-60 of the row
    maximum's (:data:`LOGIT_FLOOR`), below float32 resolution.
    Inference only (no dropout); it exports to plain MatMul/Softmax with no NaN guard.
    """
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + bias
    logits = logits - logits.amax(dim=-1, keepdim=True)
    return logits.clamp(min=-LOGIT_FLOOR).softmax(dim=-1) @ v


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout; on the CPU the mask comes from ``rand_like`` instead of ``bernoulli_``.

    Same distribution as ``F.dropout`` (each element kept with probability ``1 - p``, kept ones
    scaled by ``1 / (1 - p)``). Why: torch's CPU ``bernoulli_`` ran ~3x slower than ``rand_like``
    plus a compare here, and with 9 dropouts per step it was the largest single cost of a training
    step (27 % of the CPU time, bench/README.md "Training speed"). Other devices use ``F.dropout``.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    keep = (torch.rand_like(x) >= p).to(x.dtype)
    return x * keep.mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same ``isinstance``) computed by :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def _attention_with_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """Training-time attention on the CPU: what SDPA's math path computes, with :func:`dropout`.

    SDPA with ``dropout_p > 0`` on the CPU takes its math path anyway (no fused kernel), drawing
    the dropout mask with ``bernoulli_``; this is the same arithmetic with the faster mask.
    """
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    return dropout(logits.softmax(dim=-1), p, True) @ v


def positions(pad: torch.Tensor) -> torch.Tensor:
    """Position of each token counted from the user's first real item, ``(B, T)`` int64.

    Counting from the first real item (not from the window start) makes the encoding independent
    of how much left padding a batch has.
    """
    real = (~pad).long()
    return (real.cumsum(dim=1) - 1).clamp(min=0)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate q/k/v/o projections."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x: ``(B, T, D)``, mask: ``(B, 1, T, T)`` bool or additive float -> ``(B, T, D)``.

        ``last_only``: queries of the last position only (keys and values of all), ``(B, 1, D)``:
        exactly that row of the full output, for callers that need only the last state.
        """
        B, T, D = x.shape
        h = self.n_heads

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, S, D) -> (B, h, S, D/h)
            return t.view(B, -1, h, D // h).transpose(1, 2)

        xq = x[:, -1:] if last_only else x
        if last_only:
            mask = mask[:, :, -1:, :]
        q, k, v = split(self.q_proj(xq)), split(self.k_proj(x)), split(self.v_proj(x))
        if self.training and self.dropout > 0 and x.device.type == "cpu":
            y = _attention_with_dropout(q, k, v, mask, self.dropout)
        elif mask.dtype == torch.bool or self.training:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        else:
            y = additive_mask_attention(q, k, v, mask)
        y = y.transpose(1, 2).reshape(B, xq.shape[1], D)
        return self.o_proj(y)


class FeedForward(nn.Module):
    """Position-wise FFN ``fc2(gelu(fc1(x)))``."""

    def __init__(self, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.fc2 = nn.Linear(hidden, d_model)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(ln(x))`` then ``x + ffn(ln(x))``."""

    def __init__(self, d_model: int, n_heads: int, ffn_hidden: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, ffn_hidden, dropout)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``(B, T, D)`` -> ``(B, T, D)``, or ``(B, 1, D)`` (the last position's output) if ``last_only``."""
        if last_only:
            x = x[:, -1:] + self.drop(self.attn(self.ln1(x), mask, last_only=True))
        else:
            x = x + self.drop(self.attn(self.ln1(x), mask))
        x = x + self.drop(self.ffn(self.ln2(x)))
        return x
