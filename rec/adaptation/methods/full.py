"""``full``: every weight trains (the upper-bound baseline); a whole checkpoint by nature."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rec.adaptation.registry import WEIGHTS_FILE, AdaptationMethod, AdaptContext, ExportKind, register

if TYPE_CHECKING:
    import torch
    from torch import nn

    from rec.models.backbone import Backbone


class Full(AdaptationMethod):
    name = "full"
    summary = "fine-tune every weight (upper bound); served only as a merged per-tenant model"
    export = ExportKind.MERGED_ONLY

    def prepare(self, model: Backbone, acfg: Any, ctx: AdaptContext) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v for k, v in model.state_dict().items() if k != "prompt"}

    def load(self, folder: Path, model: Backbone) -> Backbone:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        return model


METHOD = register(Full())
