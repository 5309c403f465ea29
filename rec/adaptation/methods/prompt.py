"""``prompt``: ``P`` prefix vectors train (prompt tuning, Lester et al., EMNLP 2021).

Saved with PEFT's prompt-tuning names (``prompt_embeddings``, ``num_virtual_tokens``); served as
per-row ``prompt`` inputs of the shared graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from rec.adaptation.registry import WEIGHTS_FILE, AdaptationMethod, AdaptContext, BundleInputs, ExportKind, register

if TYPE_CHECKING:
    import torch
    from torch import nn

    from rec.models.backbone import Backbone
    from rec.training.checkpoint import LoadedBackbone


class Prompt(AdaptationMethod):
    name = "prompt"
    summary = "train P prefix vectors (prompt tuning); served as per-row inputs of the shared graph"
    export = ExportKind.GRAPH_INPUTS
    config_fields = {"prompt_length": (int, Field(4, ge=1, le=64, description="prompt: prefix vectors P"))}
    search_space = {"adapt.prompt_length": {"choice": [2, 4, 8]}}

    def prepare(self, model: Backbone, acfg: Any, ctx: AdaptContext) -> nn.Module:
        model.set_prompt(acfg.prompt_length)
        return model

    def adapter_config(self, acfg: Any) -> dict[str, Any]:
        return {**super().adapter_config(acfg), "peft_type": "PROMPT_TUNING", "num_virtual_tokens": acfg.prompt_length}

    def tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {"prompt_embeddings": model.prompt}

    def load(self, folder: Path, model: Backbone) -> Backbone:
        from safetensors.torch import load_file
        from torch import nn

        model.prompt = nn.Parameter(load_file(str(folder / WEIGHTS_FILE))["prompt_embeddings"], requires_grad=False)
        return model

    def bundle_inputs(self, adapter_dir: Path | None, adapted: Backbone, loaded: LoadedBackbone,
                      projections: dict[str, tuple[int, int]]) -> BundleInputs:
        prompt = None if adapted.prompt is None else adapted.prompt.detach().float().numpy().copy()
        return BundleInputs({}, prompt)


METHOD = register(Prompt())
