"""A trainable copy of the backbone for one adaptation method (what trains is the method's call).

The method itself is looked up in the registry (``rec.adaptation.registry``); this module holds
what every method shares: the frozen private copy, unwrapping PEFT for scoring, the parameter list.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from torch import nn

from rec.adaptation.registry import AdaptContext, get_method
from rec.config import AdaptConfig
from rec.models.backbone import Backbone

__all__ = ["prepare_model", "scoring_backbone", "trainable_parameters"]


def prepare_model(base: Backbone, acfg: AdaptConfig, base_id: str | None = None, total_steps: int | None = None,
                  ctx: AdaptContext | None = None, init_adapter: str | Path | None = None) -> nn.Module:
    """A copy of ``base`` with exactly ``acfg.method``'s parameters trainable.

    Returns a ``peft.PeftModel`` for LoRA (its attributes forward to the backbone), else a
    :class:`Backbone`. ``base`` itself is never modified. ``total_steps``: the optimizer steps
    training will take, needed by ``lora.kind: adalora`` (its rank schedule). ``ctx`` (the
    tenant's catalog size and K-user popularity) is built by ``adapt_tenant``; without it the
    method sees an empty catalog. ``init_adapter``: an adapter folder of the same method whose
    trained tensors are the starting point (warm start, ``AdaptationMethod.warm_start``).

    Raises:
        UnknownMethod: ``acfg.method`` is not registered. ValueError: the backbone lacks what the
            method trains, or ``init_adapter``'s tensors do not fit.
    """
    method = get_method(acfg.method)
    ctx = ctx or AdaptContext(base_id, total_steps, 0, np.zeros(0, np.float32))
    model = copy.deepcopy(base)
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    model = method.prepare(model, acfg, ctx)
    if init_adapter is not None:
        method.warm_start(model, Path(init_adapter))
    return model


def scoring_backbone(model: nn.Module) -> Backbone:
    """The :class:`Backbone` to call ``encode``/``scores`` on (unwraps PEFT without merging)."""
    import peft

    if isinstance(model, peft.PeftModel):
        return model.base_model.model
    return model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
