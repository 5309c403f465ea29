"""The text-based sequential recommendation backbone.

Item representation = adaptor(text embedding) [+ ID embedding], a causal transformer over the
user's history (SASRec), and scores = dot product of the last hidden state with the tenant's item
representations. Trained with full softmax cross-entropy over the catalog (or sampled softmax).

Because items enter only through their text embedding (unless ``use_id_embedding``), the model
scores a catalog it never saw in training: that is the zero-shot path for new tenants.

References:
    - Kang & McAuley, "Self-Attentive Sequential Recommendation" (SASRec), ICDM 2018.
    - Hou et al., "Towards Universal Sequence Representation Learning for Recommender Systems"
      (UniSRec), KDD 2022: text embeddings + parametric whitening adaptor, transfer across domains.
    - Klenitskiy & Vasilev, "Turning Dross Into Gold Loss: is BERT4Rec really better than
      SASRec?", RecSys 2023: full-softmax CE (SASRec+) beats BCE with one negative.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rec.models.catalog_norm import CATALOG_NORMS, normalize_catalog_text
from rec.models.layers import Dropout, TransformerBlock, attention_bias, attention_mask, positions

__all__ = ["Backbone", "TextAdaptor", "build_backbone", "prior_projection"]


ADAPTOR_INITS = ("random", "identity")


def prior_projection(text_dim: int, d_model: int) -> torch.Tensor:
    """The fixed map ``(text_dim, d_model)`` an ``identity`` adaptor starts from and stays around.

    The identity when the widths match; otherwise ``d_model`` orthonormal columns drawn with a fixed
    seed (the same matrix on every machine and in every checkpoint): a projection onto a random
    subspace, which keeps the text vectors' inner products up to the usual random-projection error.
    """
    if text_dim == d_model:
        return torch.eye(text_dim)
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(max(text_dim, d_model), min(text_dim, d_model), generator=gen))
    return q if text_dim > d_model else q.T


class TextAdaptor(nn.Module):
    """Map frozen text embeddings to the model space: parametric whitening ``(x - b) W`` (UniSRec).

    With ``hidden > 0`` an MLP ``W2 gelu(W1 (x - b))`` is used instead of a single projection.
    With ``init="identity"`` (issue 17 item 2: keep the title prior reachable) the map is residual,
    ``(x - b) (P + W)`` with the fixed :func:`prior_projection` ``P`` and ``W`` starting at zero, so
    an untrained adaptor is the title geometry itself and weight decay pulls toward it, not toward
    zero; ``W`` stays the ``proj`` linear layer (LoRA's ``adaptor.proj`` target and ``head`` train it).
    """

    def __init__(self, text_dim: int, d_model: int, hidden: int = 0, dropout: float = 0.0, init: str = "random") -> None:
        super().__init__()
        if init not in ADAPTOR_INITS:
            raise ValueError(f"adaptor init {init!r}: use one of {list(ADAPTOR_INITS)}")
        if init == "identity" and hidden > 0:
            raise ValueError("model.adaptor_init=identity needs the linear adaptor: set model.adaptor_hidden=0")
        self.bias = nn.Parameter(torch.zeros(text_dim))
        if hidden > 0:
            self.proj = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        else:
            self.proj = nn.Linear(text_dim, d_model, bias=False)
        # a None buffer is not in the state dict: checkpoints of random adaptors load as before
        self.register_buffer("prior", prior_projection(text_dim, d_model) if init == "identity" else None)
        if init == "identity":
            nn.init.zeros_(self.proj.weight)
        self.norm = nn.LayerNorm(d_model)
        self.drop = Dropout(dropout)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """``(..., text_dim)`` -> ``(..., d_model)``."""
        x = text - self.bias
        y = self.proj(x) if self.prior is None else self.proj(x) + x @ self.prior
        return self.drop(self.norm(y))


class Backbone(nn.Module):
    """SASRec-style causal transformer over text-derived item representations.

    Args:
        text_dim: Width of the item text embeddings (384 for MiniLM).
        d_model: Model width ``D``.
        n_layers: Transformer blocks.
        n_heads: Attention heads (must divide ``d_model``).
        max_len: Longest history the positional table covers.
        ffn_mult: FFN hidden = ``ffn_mult * d_model``.
        dropout: Dropout on embeddings, attention and FFN.
        use_text: Build item representations from text through the adaptor.
        num_item_ids: Size of the ID-embedding table (0 = no ID embedding). IDs are global: each
            tenant's items occupy a contiguous range assigned by the caller.
        adaptor_hidden: 0 = linear adaptor, else MLP hidden size.
        temperature: Logits are divided by it. ``None`` (the default) picks ``sqrt(d_model)`` when
            items come from text and 1 for ID-only models: the adaptor ends in a LayerNorm, so text
            item vectors have norm ~sqrt(D) and plain dot products start at about +-D, which
            saturates the softmax and wipes out the pretrained text similarity in the first epoch
            (measured in bench/README.md). ID embeddings start near zero and need no scaling.
        input_scale: Item vectors entering the encoder are multiplied by it. ``None`` picks
            ``sqrt(d_model)`` for ID-only models (SASRec's embedding scaling) and 1 when items come
            from text. ID embeddings start at std 0.02 while the blocks' outputs are O(1), so
            unscaled the item identity is a faint signal in the residual stream: on Scientific
            validation NDCG@10 after 3 epochs went 0.034 -> 0.054 with the scaling (bench/README.md,
            "Training speed"). Text item vectors leave the adaptor's LayerNorm at O(1) already.
        catalog_norm: Per-catalog normalisation of the text vectors before the adaptor, from the
            catalog's own statistics (``rec.models.catalog_norm``): ``none``, ``center``, ``whiten``.
        score: ``dot`` (``h . c / temperature``) or ``cosine``: ``exp(logit_scale) * cos(h, c)`` with a
            learned ``logit_scale`` that starts at ``log(sqrt(d_model))``, where it equals the dot
            score of LayerNorm-ed vectors (norm ``sqrt(d_model)``) at the default temperature.
        adaptor_init: ``random`` (a learned projection, torch's default init) or ``identity`` (a
            fixed projection plus a learned residual that starts at zero: :class:`TextAdaptor`).
    """

    def __init__(
        self,
        text_dim: int = 384,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 2,
        max_len: int = 50,
        ffn_mult: int = 2,
        dropout: float = 0.2,
        use_text: bool = True,
        num_item_ids: int = 0,
        adaptor_hidden: int = 0,
        temperature: float | None = None,
        input_scale: float | None = None,
        catalog_norm: str = "none",
        score: str = "dot",
        adaptor_init: str = "random",
    ) -> None:
        super().__init__()
        if not use_text and num_item_ids <= 0:
            raise ValueError("Backbone needs text (use_text=True) or an ID table (num_item_ids > 0)")
        if temperature is None:
            temperature = math.sqrt(d_model) if use_text else 1.0
        if input_scale is None:
            input_scale = 1.0 if use_text else math.sqrt(d_model)
        self.d_model, self.max_len, self.temperature = d_model, max_len, float(temperature)
        self.input_scale = float(input_scale)
        if catalog_norm not in CATALOG_NORMS or score not in ("dot", "cosine"):
            raise ValueError(f"catalog_norm {catalog_norm!r} / score {score!r}: use one of {list(CATALOG_NORMS)} / dot, cosine")
        self.catalog_norm, self.score_kind = catalog_norm, score
        self.logit_scale = nn.Parameter(torch.tensor(math.log(math.sqrt(d_model)))) if score == "cosine" else None
        self.adaptor = TextAdaptor(text_dim, d_model, adaptor_hidden, dropout, adaptor_init) if use_text else None
        self.id_emb = nn.Embedding(num_item_ids, d_model) if num_item_ids > 0 else None
        if self.id_emb is not None:
            nn.init.normal_(self.id_emb.weight, std=0.02)
        self.pos_emb = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.emb_drop = Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, ffn_mult * d_model, dropout) for _ in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(d_model)
        # Prompt tuning (Lester et al., EMNLP 2021): learned prefix vectors set by an adapter.
        self.prompt: nn.Parameter | None = None

    def set_prompt(self, length: int) -> nn.Parameter:
        """Attach ``length`` trainable prefix vectors ``(P, D)`` (small random init) and return them."""
        self.prompt = nn.Parameter(torch.randn(length, self.d_model) * 0.02)
        return self.prompt

    # --- items ---------------------------------------------------------------------------------
    def item_representations(
        self, text_emb: torch.Tensor | None = None, item_ids: torch.Tensor | slice | None = None
    ) -> torch.Tensor:
        """Item vectors ``(N, D)`` from text embeddings ``(N, text_dim)`` and/or global ids ``(N,)``
        (or a ``slice`` of the ID table: a tenant's contiguous range, read without a gather).

        ``text_emb`` is one tenant's whole catalog: ``catalog_norm`` takes its statistics from it.
        """
        rep = None
        if self.adaptor is not None:
            if text_emb is None:
                raise ValueError("this backbone uses item text: pass text_emb")
            rep = self.adaptor(normalize_catalog_text(text_emb, self.catalog_norm))
        if self.id_emb is not None and item_ids is not None:
            ide = self.id_emb.weight[item_ids] if isinstance(item_ids, slice) else self.id_emb(item_ids)
            rep = ide if rep is None else rep + ide
        if rep is None:
            raise ValueError("this backbone is ID-only: pass item_ids")
        return rep

    # --- sequences -----------------------------------------------------------------------------
    def encode(
        self,
        hist: torch.Tensor,
        pad: torch.Tensor,
        prompt: torch.Tensor | None = None,
        prompt_pad: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Hidden states for every position.

        Args:
            hist: ``(B, T, D)`` item representations of the history, left-padded.
            pad: ``(B, T)`` bool, True at padding.
            prompt: Optional prefix ``(P, D)`` or per-row ``(B, P, D)``; defaults to ``self.prompt``.
                Prefix tokens sit before the padding, so every real item attends to them.
            prompt_pad: Optional ``(B, P)`` bool, True at prefix slots a row does not use (masked
                like padding), so rows with different prompts, or none, share one batch.
            last_only: The serving path: only the state after the most recent item, ``(B, 1, D)``.
                The last block computes queries and FFN for that position only (keys and values
                of all), and attention takes an additive float mask, which exports to ONNX
                without a NaN guard. Same values as ``encode(...)[:, -1:]`` up to float rounding.

        Returns:
            ``(B, T, D)``; position ``T-1`` is the state after the most recent item.
        """
        pos = positions(pad).clamp(max=self.max_len - 1)
        if self.input_scale != 1.0:
            hist = hist * self.input_scale
        x = self.emb_drop(hist + self.pos_emb(pos))
        x = x * (~pad)[..., None].to(x.dtype)
        prompt = self.prompt if prompt is None else prompt
        P = 0
        if prompt is not None:
            if prompt.dim() == 2:
                prompt = prompt.unsqueeze(0).expand(x.shape[0], -1, -1)
            P = prompt.shape[1]
            x = torch.cat([prompt.to(x.dtype), x], dim=1)  # (B, P+T, D)
            if prompt_pad is None:
                prompt_pad = torch.zeros(pad.shape[0], P, dtype=torch.bool, device=pad.device)
            pad = torch.cat([prompt_pad, pad], dim=1)
        mask = attention_mask(pad)
        if last_only:
            mask = attention_bias(mask, x.dtype)
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, last_only=last_only and i == n - 1)
        return self.final_norm(x[:, -1:] if last_only else x[:, P:])

    def user_vector(self, hist: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """``(B, D)``: the hidden state after the last item (left padding puts it at ``T-1``)."""
        return self.encode(hist, pad)[:, -1, :]

    def scores(self, hidden: torch.Tensor, catalog: torch.Tensor) -> torch.Tensor:
        """Dot-product scores ``(..., N)`` of hidden ``(..., D)`` against catalog ``(N, D)``."""
        # Scale the (…, D) side, not the (…, N) logits: same value, N/D times less work.
        if self.logit_scale is not None:
            return (F.normalize(hidden, dim=-1) * self.logit_scale.exp()) @ F.normalize(catalog, dim=-1).T
        return (hidden / self.temperature) @ catalog.T

    # --- losses --------------------------------------------------------------------------------
    def ce_loss(self, hidden: torch.Tensor, targets: torch.Tensor, catalog: torch.Tensor) -> torch.Tensor:
        """Full-softmax cross-entropy over the whole catalog (SASRec+).

        Args:
            hidden: ``(B, T, D)``; targets: ``(B, T)`` dense item index or -100 (ignored);
            catalog: ``(N, D)``.
        """
        keep = targets >= 0
        logits = self.scores(hidden[keep], catalog)  # (M, N)
        return F.cross_entropy(logits, targets[keep])

    def sampled_ce_loss(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        catalog: torch.Tensor,
        num_negatives: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sampled softmax with uniform negatives shared across the batch (for large catalogs).

        Negatives that equal a row's target are masked out. Uniform sampling needs no logQ
        correction (it is a constant shift).
        """
        keep = targets >= 0
        h, t = hidden[keep], targets[keep]  # (M, D), (M,)
        n = catalog.shape[0]
        neg = torch.randint(0, n, (min(num_negatives, n),), device=h.device, generator=generator)
        if self.logit_scale is not None:
            pos_logit = (F.normalize(h, dim=-1) * self.logit_scale.exp() * F.normalize(catalog[t], dim=-1)).sum(-1, keepdim=True)
        else:
            pos_logit = ((h / self.temperature) * catalog[t]).sum(-1, keepdim=True)  # (M, 1)
        neg_logit = self.scores(h, catalog[neg])  # (M, S)
        neg_logit = neg_logit.masked_fill(neg[None, :] == t[:, None], float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(t), dtype=torch.long, device=h.device))


def build_backbone(model_cfg, num_item_ids: int = 0) -> Backbone:  # noqa: ANN001 - ModelConfig
    """Build a :class:`Backbone` from a ``rec.config.ModelConfig`` (explicit args inside)."""
    return Backbone(
        text_dim=model_cfg.text_dim,
        d_model=model_cfg.d_model,
        n_layers=model_cfg.n_layers,
        n_heads=model_cfg.n_heads,
        max_len=model_cfg.max_len,
        ffn_mult=model_cfg.ffn_mult,
        dropout=model_cfg.dropout,
        use_text=model_cfg.use_text,
        num_item_ids=num_item_ids if model_cfg.use_id_embedding else 0,
        adaptor_hidden=model_cfg.adaptor_hidden,
        temperature=model_cfg.temperature,
        input_scale=model_cfg.input_scale,
        catalog_norm=model_cfg.catalog_norm,
        score=model_cfg.score,
        adaptor_init=model_cfg.adaptor_init,
    )
