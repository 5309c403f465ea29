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

__all__ = ["CausalSelfAttention", "FeedForward", "TransformerBlock", "attention_mask", "positions"]


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

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: ``(B, T, D)``, mask: ``(B, 1, T, T)`` bool -> ``(B, T, D)``."""
        B, T, D = x.shape
        h = self.n_heads

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, h, T, D/h)
            return t.view(B, T, h, D // h).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.o_proj(y)


class FeedForward(nn.Module):
    """Position-wise FFN ``fc2(gelu(fc1(x)))``."""

    def __init__(self, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.fc2 = nn.Linear(hidden, d_model)
        self.drop = nn.Dropout(dropout)

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
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask))
        x = x + self.drop(self.ffn(self.ln2(x)))
        return x
