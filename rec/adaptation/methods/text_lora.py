"""``text-lora``: LoRA on the top layers of the item-text encoder, trained with the recommendation loss.

The other methods leave the language model frozen, so a tenant's items keep the vectors MiniLM
gave their titles. This one adapts the encoder itself (issue 17 item 4; Recformer, Li et al., KDD
2023, and NineRec train the text model end to end): PEFT LoRA on the top ``text_lora.layers``
layers' attention and FFN projections (``rec.text.lora_tower``), mean pooling and L2 norm as the
frozen encoder, into the frozen backbone's item path (the item-text adaptor trains too, as ``head``,
with ``text_lora.train_adaptor``).

Affordable on 2 cores:

- the token states entering the first adapted layer are computed once per catalog by one frozen
  pass and kept in memory (``rec.text.token_states``); a step runs only the top layers;
- a step re-encodes only the batch's items (targets first, then history items, at most
  ``text_lora.max_active_items``); every other item of the full-softmax loss keeps its vector from
  the last whole-catalog encoding (a memory bank, refreshed before every validation);
- or, with ``text_lora.negatives: in-batch``, the softmax covers only the items re-encoded this step
  (every target, the batch's history, uniform fill), so no candidate is scored with stale weights;
- a small text-preserving term, ``preserve_weight * mean(1 - cos(new, frozen))`` over the re-encoded
  items, keeps the vectors near the pretrained ones.

Serving does not change: after training the whole catalog is re-encoded once with the kept LoRA
weights, and that matrix (``catalog_text [N, text_dim]``) is what the adapter ships; the tenant
bundle's catalog matrix is the adaptor applied to it, so the shared graph, its inputs and the cost
per request are zero-shot's (``ExportKind.CATALOG``). The LoRA weights are saved too (under the
names PEFT gives them on the whole encoder) for warm starts.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import Field

from rec.adaptation.methods._item_space import item_space_tensors, load_item_space
from rec.adaptation.registry import (WEIGHTS_FILE, AdaptationMethod, AdaptContext, ExportKind, MethodConfig, TrainingHooks,
                                     register)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from rec.models.backbone import Backbone

__all__ = ["TextLora", "TextLoraConfig"]


class TextLoraConfig(MethodConfig):
    """``adapt.text_lora``: which encoder layers adapt, LoRA's shape, and how a step samples items."""

    layers: int = Field(1, ge=1, description="top layers of the text encoder that get LoRA (the ones below are cached)")
    rank: int = Field(8, ge=1, le=256)
    alpha: float = Field(16.0, gt=0.0)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "key", "value", "dense"],
                                      description="nn.Linear names inside an encoder layer (BERT-style)")
    train_adaptor: bool = Field(True, description="also train the backbone's item-text adaptor (catalog-side, as head)")
    max_active_items: int = Field(128, ge=1, description="items re-encoded per step (targets first); the rest use the last catalog encoding")
    preserve_weight: float = Field(1.0, ge=0.0, description="weight of mean(1 - cos(new, frozen)) over the re-encoded items")
    negatives: Literal["catalog", "in-batch"] = Field(
        "catalog", description="catalog: full softmax, items not re-encoded this step keep their last catalog encoding; "
        "in-batch: softmax over this step's re-encoded items only (every target, the batch's history, uniform fill up to "
        "max_active_items), so no candidate is scored with stale weights")


@functools.cache
def _backbone_class() -> type:
    """:class:`Backbone` whose item text comes from its own (re-encoded) catalog; built on first use."""
    import torch

    from rec.models.backbone import Backbone

    class TextLoraBackbone(Backbone):
        """Item text = ``catalog_text`` (``(N, text_dim)``), or while training with a tower, the
        catalog with the active items re-encoded (gradients flow through those rows only)."""

        catalog_text: torch.Tensor

        def item_representations(self, text_emb: torch.Tensor | None = None, item_ids: torch.Tensor | None = None) -> torch.Tensor:
            if text_emb is not None and text_emb.shape[0] != self.catalog_text.shape[0]:
                raise ValueError(f"text-lora re-encoded {self.catalog_text.shape[0]} items, the catalog has {text_emb.shape[0]}: "
                                 "re-adapt after a catalog change")
            return super().item_representations(self._text(), item_ids)

        def _text(self) -> torch.Tensor:
            tower = getattr(self, "text_tower", None)
            if tower is None:  # loaded for scoring/export: the shipped matrix
                return self.catalog_text
            if self.training and self.active_items is not None:
                new = tower(*self.token_states.batch(self.active_items))  # (A, text_dim)
                self.active_text = new
                return self.catalog_text.index_copy(0, self.active_items, new)
            if self.catalog_stale:
                with torch.no_grad():
                    self.catalog_text.copy_(tower.encode_all(self.token_states))
                self.catalog_stale = False
            return self.catalog_text

        def scores(self, hidden: torch.Tensor, catalog: torch.Tensor) -> torch.Tensor:
            out = super().scores(hidden, catalog)
            mask = getattr(self, "score_mask", None)  # (N,) 0 / -inf: in-batch negatives while training
            if self.training and mask is not None and catalog.shape[0] == mask.shape[0]:
                out = out + mask
            return out

    return TextLoraBackbone


def _attach(model: Backbone, catalog_text: torch.Tensor) -> Backbone:
    model.__class__ = _backbone_class()
    model.register_buffer("catalog_text", catalog_text.detach().clone().float())
    model.text_tower = None
    model.active_items = model.active_text = None
    model.catalog_stale = False
    return model


def _pick_active(inputs: torch.Tensor, targets: torch.Tensor, limit: int, gen: torch.Generator,
                 num_items: int | None = None) -> torch.Tensor:
    """The batch's items to re-encode, sorted: its targets first, then its history items, at most ``limit``.

    With ``num_items`` (in-batch negatives) every target is kept whatever ``limit`` (a target outside
    the softmax would have no probability) and the rest is filled with uniformly drawn catalog items.
    """
    import torch

    pos = torch.unique(targets[targets >= 0])
    if len(pos) >= limit:
        keep = pos if num_items else pos[torch.randperm(len(pos), generator=gen)[:limit]]
        return keep.sort().values
    hist = torch.unique(inputs[inputs >= 0])
    hist = hist[~torch.isin(hist, pos)]
    chosen = torch.cat([pos, hist[torch.randperm(len(hist), generator=gen)[: limit - len(pos)]]])
    if num_items and len(chosen) < limit:
        rest = torch.ones(num_items, dtype=torch.bool)
        rest[chosen] = False
        pool = rest.nonzero().squeeze(1)
        chosen = torch.cat([chosen, pool[torch.randperm(len(pool), generator=gen)[: limit - len(chosen)]]])
    return chosen.sort().values


class TextLora(AdaptationMethod):
    name = "text-lora"
    summary = "LoRA on the top layers of the item-text encoder (cached lower layers); the re-encoded catalog ships"
    export = ExportKind.CATALOG
    config_fields = {"text_lora": (TextLoraConfig, Field(default_factory=TextLoraConfig))}
    search_space = {
        "adapt.text_lora.rank": {"choice": [4, 8, 16]},
        "adapt.text_lora.preserve_weight": {"choice": [0.0, 0.3, 1.0, 3.0]},
        "adapt.text_lora.train_adaptor": {"choice": [False, True]},
    }

    def prepare(self, model: Backbone, acfg: Any, ctx: AdaptContext) -> nn.Module:
        from rec.text.cache import get_encoder
        from rec.text.item_format import format_item_texts
        from rec.text.lora_tower import LoraTower
        from rec.text.token_states import token_states

        tl = acfg.text_lora
        if ctx.item_text is None or ctx.text is None:
            raise ValueError("text-lora re-encodes the tenant's item text: adapt_tenant passes it (AdaptContext.item_text, .text)")
        if model.adaptor is None:
            raise ValueError("text-lora feeds re-encoded item text into the item-text adaptor, but this backbone has none")
        encoder = get_encoder(ctx.text)
        cut = int(encoder.model.config.num_hidden_layers) - tl.layers
        states = token_states(encoder, format_item_texts(list(ctx.item_text), ctx.text.item_format), cut)
        if states.num_items != ctx.num_items:
            raise ValueError(f"text-lora: {states.num_items} item texts for a catalog of {ctx.num_items} items")
        model = _attach(model, states.frozen)
        model.text_tower = LoraTower(encoder, cut, tl.rank, tl.alpha, tl.target_modules)
        model.token_states = states
        model.text_lora_limits = (tl.max_active_items, tl.preserve_weight, tl.negatives == "in-batch")
        if tl.train_adaptor:
            for p in model.adaptor.parameters():
                p.requires_grad_(True)
        if model.logit_scale is not None:
            model.logit_scale.requires_grad_(True)
        return model

    def training_hooks(self, model: nn.Module) -> TrainingHooks:
        import torch

        from rec.text.lora_tower import preserve_term

        limit, weight, in_batch = model.text_lora_limits
        gen = torch.Generator().manual_seed(0)
        n = model.catalog_text.shape[0]

        def before_batch(inputs: torch.Tensor, targets: torch.Tensor) -> None:
            model.active_items = _pick_active(inputs, targets, limit, gen, n if in_batch else None)
            model.active_text = None
            model.catalog_stale = True
            if in_batch:
                model.score_mask = torch.full((n,), float("-inf")).index_fill_(0, model.active_items, 0.0)

        def regularizer() -> torch.Tensor:
            if weight == 0.0 or model.active_text is None:
                return torch.zeros(())
            return preserve_term(model.active_text, model.token_states.frozen[model.active_items], weight)

        return TrainingHooks(regularizer=regularizer, before_batch=before_batch)

    def after_training(self, model: nn.Module, acfg: Any, ctx: AdaptContext,
                       validate: Callable[[nn.Module], dict[str, float]], best: dict[str, float]) -> dict[str, Any]:
        """Nothing changes here; the record says what the catalog encoding cost."""
        st = model.token_states
        return {"text_lora": {"cut_layer": st.cut, "token_cache_s": round(st.build_s, 2), "token_cache_hit": st.build_s == 0.0,
                              "cached_tokens": int(st.states.shape[0]), "re_encoded_items": st.num_items}}

    def adapter_config(self, acfg: Any) -> dict[str, Any]:
        return {**super().adapter_config(acfg), "text_lora": acfg.text_lora.model_dump(mode="json")}

    def tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        out = {"catalog_text": model.catalog_text}
        if model.text_tower is not None:
            out.update(model.text_tower.lora_tensors())
        return {**out, **item_space_tensors(model)}

    def load(self, folder: Path, model: Backbone) -> Backbone:
        from safetensors.torch import load_file

        t = load_file(str(folder / WEIGHTS_FILE))
        load_item_space(t, model, folder)
        return _attach(model, t["catalog_text"])


METHOD = register(TextLora())
