"""``item-terms``: a per-item bias and an optional per-item ID residual, learned at adaptation.

A text-only model cannot learn that an item is popular, or that one item follows another, unless
the titles say so. This method adds, on top of the frozen backbone (optionally with its
item-text adaptor trained, as ``head`` does):

- ``item_bias [N]``, initialised from the log-popularity the K training users give,
  ``log(1 + count)`` (zero where unseen), added to every score: ``s_i = (h / T) . c_i + b_i``;
- with ``item_terms.id_residual``, ``item_residual [N, D]`` (zero init) added to the item vector
  ``c_i`` of the items seen in the tenant's training data, so it moves both the history inputs and
  the scored vectors (UniSRec's transductive setting, Hou et al., KDD 2022).

Both are catalog-side: the residual is baked into the tenant's catalog matrix and the bias is
stored beside it (``item_bias`` in ``catalog.safetensors``, added to ``catalog @ user``), so the
shared graph, its inputs and the serving cost per request (one add of ``N`` floats) do not change.
The encoder stays frozen, so a bundle has no per-row adapter tensors and runs on the base graph.

**Popularity floor** (``item_terms.popularity_floor``): after training, the tenant's own
validation users compare the trained model, blends that add ``w * log(1 + count)`` to its bias
(``item_terms.blend_weights``) and the K users' popularity ranking itself (catalog gated to zero,
bias = :func:`popularity_scores`: by count, ties by catalog row), and the best is shipped; the adapter manifest
records every candidate's validation NDCG@10 and the choice. Popularity is a candidate, so the
shipped model is never below it on validation.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pydantic import Field

from rec.adaptation.methods._item_space import item_space_tensors, load_item_space
from rec.adaptation.registry import WEIGHTS_FILE, AdaptationMethod, AdaptContext, ExportKind, MethodConfig, register

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from rec.models.backbone import Backbone

__all__ = ["ItemTerms", "ItemTermsConfig", "log_popularity", "popularity_scores"]

#: metric the popularity floor compares on (what early stopping uses too)
FLOOR_METRIC = "ndcg@10"


class ItemTermsConfig(MethodConfig):
    """``adapt.item_terms``: what the item-terms method learns and how the popularity floor decides."""

    id_residual: bool = Field(False, description="also learn a per-item vector residual for items seen in the tenant's data")
    train_adaptor: bool = Field(False, description="also train the item-text adaptor (as the head method); still catalog-side")
    popularity_floor: bool = Field(True, description="ship the best of model, blends and popularity on the tenant's validation users")
    blend_weights: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0],
                                       description="w of the blends bias + w * log(1 + count) the floor tries")


def log_popularity(counts: np.ndarray) -> np.ndarray:
    """``log(1 + count)`` per item ``(N,)`` float32: the bias init (zero where unseen)."""
    import numpy as np

    return np.log1p(np.asarray(counts, np.float64)).astype(np.float32)


def popularity_scores(counts: np.ndarray) -> np.ndarray:
    """The K users' popularity ranking as distinct scores ``(N,)`` in ``(0, 1]``.

    Items by count, ties by catalog row, scored ``1 - position / N``: a tie-break added to
    log-counts would vanish in float32 (its steps fall below the values' resolution), these steps
    of ``1/N`` do not for any catalog under ~10^7 items.
    """
    import numpy as np

    n = len(counts)
    order = np.lexsort((np.arange(n), -np.asarray(counts, np.float64)))  # count desc, then row asc
    scores = np.empty(n, np.float32)
    scores[order] = 1.0 - np.arange(n, dtype=np.float64) / max(n, 1)
    return scores


@functools.cache
def _backbone_class() -> type:
    """:class:`Backbone` with item terms; built on first use so importing this module needs no torch."""
    import torch
    from torch import nn

    from rec.models.backbone import Backbone

    class ItemTermsBackbone(Backbone):
        """A :class:`Backbone` whose item vectors get ``gate * (c_i + seen_i * r_i)`` and scores ``+ b_i``.

        Made from a backbone by :func:`_attach` (the class is swapped in place, so every module and
        weight is the original's); ``catalog_gate`` is 1 except for the floor's popularity fallback (0).
        """

        item_bias: nn.Parameter  # (N,)
        item_residual: nn.Parameter | None  # (N, D)

        def item_representations(self, text_emb: torch.Tensor | None = None, item_ids: torch.Tensor | None = None) -> torch.Tensor:
            rep = super().item_representations(text_emb, item_ids)  # (N, D)
            if rep.shape[0] != self.item_bias.shape[0]:
                raise ValueError(f"item terms were learned for {self.item_bias.shape[0]} items, the catalog has {rep.shape[0]}")
            if self.item_residual is not None:
                rep = rep + self.item_residual * self.seen[:, None]
            return rep * self.catalog_gate

        def scores(self, hidden: torch.Tensor, catalog: torch.Tensor) -> torch.Tensor:
            if catalog.shape[0] != self.item_bias.shape[0]:
                raise ValueError(f"item bias has {self.item_bias.shape[0]} items, the scored catalog {catalog.shape[0]}: "
                                 "item terms score the whole catalog (model.loss=ce)")
            return super().scores(hidden, catalog) + self.item_bias

    return ItemTermsBackbone


def _attach(model: Backbone, bias: torch.Tensor, residual: torch.Tensor | None, seen: torch.Tensor,
            gate: float = 1.0) -> Backbone:
    """Turn ``model`` (a private copy) into an item-terms backbone with these tensors; returns it."""
    import torch
    from torch import nn

    model.__class__ = _backbone_class()
    model.item_bias = nn.Parameter(bias.detach().clone().float())
    model.item_residual = None if residual is None else nn.Parameter(residual.detach().clone().float())
    model.register_buffer("seen", seen.detach().clone().float())
    model.register_buffer("catalog_gate", torch.tensor(float(gate)))
    return model


class ItemTerms(AdaptationMethod):
    name = "item-terms"
    summary = "per-item bias (log-popularity init) + optional ID residual, baked into the catalog; popularity floor"
    export = ExportKind.CATALOG
    config_fields = {"item_terms": (ItemTermsConfig, Field(default_factory=ItemTermsConfig))}
    search_space = {
        "adapt.item_terms.id_residual": {"choice": [False, True]},
        "adapt.item_terms.train_adaptor": {"choice": [False, True]},
    }

    def prepare(self, model: Backbone, acfg: Any, ctx: AdaptContext) -> nn.Module:
        import torch

        counts = torch.from_numpy(ctx.item_popularity.astype("float32"))
        residual = torch.zeros(ctx.num_items, model.d_model) if acfg.item_terms.id_residual else None
        model = _attach(model, torch.from_numpy(log_popularity(ctx.item_popularity)), residual, counts > 0)
        if model.logit_scale is not None:  # a cosine-score backbone: its temperature is the tenant's to learn
            model.logit_scale.requires_grad_(True)
        if acfg.item_terms.train_adaptor:
            if model.adaptor is None:
                raise ValueError("adapt.item_terms.train_adaptor trains the item-text adaptor, but this backbone has none")
            for p in model.adaptor.parameters():
                p.requires_grad_(True)
        return model

    def after_training(self, model: nn.Module, acfg: Any, ctx: AdaptContext,
                       validate: Callable[[nn.Module], dict[str, float]], best: dict[str, float]) -> dict[str, Any]:
        """The popularity floor (module doc): set ``model`` to the best candidate; the manifest record."""
        import torch

        if not acfg.item_terms.popularity_floor:
            return {"popularity_floor": None}
        trained = model.item_bias.detach().clone()
        logpop = torch.from_numpy(log_popularity(ctx.item_popularity))
        candidates: dict[str, tuple[torch.Tensor, float]] = {"model": (trained, 1.0)}
        for w in acfg.item_terms.blend_weights:
            candidates[f"blend_{w:g}"] = (trained + w * logpop, 1.0)
        candidates["popularity"] = (torch.from_numpy(popularity_scores(ctx.item_popularity)), 0.0)
        metrics = {"model": best}
        chosen = "model"
        for label, (bias, gate) in candidates.items():
            if label != "model":
                self._set(model, bias, gate)
                metrics[label] = validate(model)
            if metrics[label][FLOOR_METRIC] > metrics[chosen][FLOOR_METRIC]:
                chosen = label
        self._set(model, *candidates[chosen])
        return {"popularity_floor": {
            "metric": f"val_{FLOOR_METRIC}",
            "candidates": {k: float(m[FLOOR_METRIC]) for k, m in metrics.items()},
            "chosen": chosen,
            "valid": metrics[chosen],
        }}

    @staticmethod
    def _set(model: nn.Module, bias: torch.Tensor, gate: float) -> None:
        import torch

        with torch.no_grad():
            model.item_bias.copy_(bias)
            model.catalog_gate.fill_(gate)

    def tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        out = {"item_bias": model.item_bias, "catalog_gate": model.catalog_gate.reshape(1), "seen": model.seen}
        if model.item_residual is not None:
            out["item_residual"] = model.item_residual
        return {**out, **item_space_tensors(model)}

    def load(self, folder: Path, model: Backbone) -> Backbone:
        from safetensors.torch import load_file

        t = load_file(str(folder / WEIGHTS_FILE))
        load_item_space(t, model, folder)
        return _attach(model, t["item_bias"], t.get("item_residual"), t["seen"], float(t["catalog_gate"][0]))


METHOD = register(ItemTerms())
