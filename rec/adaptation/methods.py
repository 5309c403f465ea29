"""Few-shot adaptation methods: which parameters of a pretrained backbone train for a new tenant.

- ``zero-shot``: nothing trains; the tenant is scored from its catalog text alone.
- ``head``: only the item-text adaptor trains (the tenant's item space moves, the encoder stays).
- ``prompt``: ``P`` prefix vectors train (prompt tuning, Lester et al., EMNLP 2021).
- ``lora``: low-rank updates of the attention/FFN/adaptor projections, via PEFT (Hu et al., 2022).
- ``full``: every weight trains (the upper-bound baseline).
"""

from __future__ import annotations

import copy

import peft
from torch import nn

from rec.config import AdaptConfig
from rec.models.backbone import Backbone

__all__ = ["prepare_model", "scoring_backbone", "trainable_parameters", "peft_lora_config"]


def peft_lora_config(acfg: AdaptConfig) -> peft.LoraConfig:
    """The PEFT ``LoraConfig`` for our settings (also what ``adapter_config.json`` holds).

    ``lora.train_adaptor``: the item-text adaptor trains in full (``modules_to_save``) and LoRA
    targets only the encoder; the saved adapter then carries the adaptor's weights too.
    """
    targets = list(acfg.lora.target_modules)
    if acfg.lora.train_adaptor:
        targets = [t for t in targets if not t.startswith("adaptor.")]
    if not targets:
        raise ValueError("adapt.lora.train_adaptor leaves no LoRA target: add encoder projections to adapt.lora.target_modules")
    return peft.LoraConfig(
        r=acfg.lora.rank,
        lora_alpha=acfg.lora.alpha,
        lora_dropout=acfg.lora.dropout,
        target_modules=targets,
        modules_to_save=["adaptor"] if acfg.lora.train_adaptor else None,
    )


def prepare_model(base: Backbone, acfg: AdaptConfig, base_id: str | None = None) -> nn.Module:
    """A copy of ``base`` with exactly the method's parameters trainable.

    Returns a ``peft.PeftModel`` for LoRA (its attributes forward to the backbone), else a
    :class:`Backbone`. ``base`` itself is never modified.
    """
    model = copy.deepcopy(base)
    model.train()
    method = acfg.method
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    for p in model.parameters():
        p.requires_grad_(False)
    if method == "zero-shot":
        return model
    if method == "head":
        if model.adaptor is None:
            raise ValueError("method 'head' trains the item-text adaptor, but this backbone has no text adaptor")
        for p in model.adaptor.parameters():
            p.requires_grad_(True)
        return model
    if method == "prompt":
        model.set_prompt(acfg.prompt_length)
        return model
    if method == "lora":
        if acfg.lora.train_adaptor and model.adaptor is None:
            raise ValueError("adapt.lora.train_adaptor trains the item-text adaptor, but this backbone has no text adaptor: "
                             "set adapt.lora.train_adaptor=false and drop 'adaptor.proj' from adapt.lora.target_modules")
        if ("adaptor.proj" in acfg.lora.target_modules and not acfg.lora.train_adaptor
                and not isinstance(getattr(model.adaptor, "proj", None), nn.Linear)):
            raise ValueError("adapt.lora.target_modules has 'adaptor.proj' but this backbone's adaptor is not a single Linear")
        wrapped = peft.get_peft_model(model, peft_lora_config(acfg))
        # Set after wrapping: get_peft_model resets it from the (absent) HF model name and warns.
        wrapped.peft_config["default"].base_model_name_or_path = base_id
        return wrapped
    raise ValueError(f"unknown adaptation method {method!r}")


def scoring_backbone(model: nn.Module) -> Backbone:
    """The :class:`Backbone` to call ``encode``/``scores`` on (unwraps PEFT without merging)."""
    if isinstance(model, peft.PeftModel):
        return model.base_model.model
    return model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
