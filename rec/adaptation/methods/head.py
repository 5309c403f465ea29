"""``head``: only the item-text adaptor trains (the tenant's item space moves, the encoder stays)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rec.adaptation.registry import WEIGHTS_FILE, AdaptationMethod, AdaptContext, ExportKind, register

if TYPE_CHECKING:
    import torch
    from torch import nn

    from rec.models.backbone import Backbone


class Head(AdaptationMethod):
    name = "head"
    summary = "train the item-text adaptor only; baked into the tenant's catalog matrix at export"
    export = ExportKind.CATALOG

    def prepare(self, model: Backbone, acfg: Any, ctx: AdaptContext) -> nn.Module:
        if model.adaptor is None:
            raise ValueError("method 'head' trains the item-text adaptor, but this backbone has no text adaptor")
        for p in model.adaptor.parameters():
            p.requires_grad_(True)
        return model

    def tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {f"adaptor.{k}": v for k, v in model.adaptor.state_dict().items()}

    def load(self, folder: Path, model: Backbone) -> Backbone:
        from safetensors.torch import load_file

        tensors = load_file(str(folder / WEIGHTS_FILE))
        model.adaptor.load_state_dict({k.removeprefix("adaptor."): v for k, v in tensors.items()})
        return model


METHOD = register(Head())
