"""Few-shot adaptation methods: which parameters of a pretrained backbone train for a new tenant.

- ``zero-shot``: nothing trains; the tenant is scored from its catalog text alone.
- ``head``: only the item-text adaptor trains (the tenant's item space moves, the encoder stays).
- ``prompt``: ``P`` prefix vectors train (prompt tuning, Lester et al., EMNLP 2021).
- ``lora``: low-rank updates of the attention/FFN projections, via PEFT (Hu et al., 2022), with the
  item-text adaptor trained in full (or a low-rank update of it); ``lora.kind: adalora`` = PEFT
  AdaLoRA, ranks adapted per projection during training (:func:`training_hooks`).
- ``full``: every weight trains (the upper-bound baseline).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import NamedTuple

import peft
import torch
from torch import nn

from rec.config import AdaptConfig
from rec.models.backbone import Backbone

__all__ = ["prepare_model", "scoring_backbone", "trainable_parameters", "peft_lora_config", "training_hooks", "TrainingHooks"]


def peft_lora_config(acfg: AdaptConfig, total_steps: int | None = None) -> peft.LoraConfig:
    """The PEFT ``LoraConfig`` (or ``AdaLoraConfig``) for our settings (also what ``adapter_config.json`` holds).

    ``lora.train_adaptor``: the item-text adaptor trains in full (``modules_to_save``) and LoRA
    targets only the encoder; the saved adapter then carries the adaptor's weights too.
    AdaLoRA schedules its rank budget over ``total_steps`` optimizer steps (required for it).
    """
    lc = acfg.lora
    targets = list(lc.target_modules)
    if lc.train_adaptor:
        targets = [t for t in targets if not t.startswith("adaptor.")]
    if not targets:
        raise ValueError("adapt.lora.train_adaptor leaves no LoRA target: add encoder projections to adapt.lora.target_modules")
    common = dict(lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=targets,
                  modules_to_save=["adaptor"] if lc.train_adaptor else None)
    if lc.kind == "lora":
        return peft.LoraConfig(r=lc.rank, **common)
    if not total_steps or total_steps < 1:
        raise ValueError("AdaLoRA needs the number of training steps in advance (total_steps); adapt_tenant computes it")
    # warmup + final < 1 (LoraConfig), so tinit < total_steps - tfinal: PEFT's budgeting phase is never empty
    tinit, tfinal = int(lc.adalora_warmup * total_steps), int(lc.adalora_final * total_steps)
    return peft.AdaLoraConfig(init_r=lc.adalora_init_rank, target_r=lc.rank, tinit=tinit, tfinal=tfinal, deltaT=1,
                              orth_reg_weight=lc.adalora_orth_reg, total_step=total_steps, **common)


class TrainingHooks(NamedTuple):
    """What a method adds to the training loop (``rec.training.loop.train_epoch``); all None for most."""

    regularizer: Callable[[], torch.Tensor] | None = None  # added to every step's loss
    after_step: Callable[[], None] | None = None  # after every optimizer step, gradients still set
    finish: Callable[[], bool] | None = None  # once, after the best epoch's weights are restored


def training_hooks(model: nn.Module) -> TrainingHooks:
    """The :class:`TrainingHooks` AdaLoRA needs; empty ones for every other method.

    PEFT adds AdaLoRA's orthogonality penalty only inside ``PeftModel.forward`` for models that
    return a ``.loss``; our loss calls the backbone directly, so the same penalty (mean Frobenius
    norm of ``A A^T - I`` and ``B^T B - I``) is added here. ``after_step`` runs PEFT's
    ``update_and_allocate`` after every optimizer step: importance scores, then the rank budget
    mask. ``finish`` masks the restored weights with the last rank pattern (early stopping may
    restore an epoch from before the last pruning), so the model evaluated is the one
    ``save_pretrained`` writes, which keeps only the pattern's directions; returns whether it ran.
    """
    if not isinstance(model, peft.PeftModel) or not isinstance(model.peft_config["default"], peft.AdaLoraConfig):
        return TrainingHooks()
    cfg = model.peft_config["default"]
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad and (".lora_A." in n or ".lora_B." in n)]

    def regularizer() -> torch.Tensor:
        total = 0.0
        for n, p in params:
            cov = p @ p.T if ".lora_A." in n else p.T @ p
            total = total + torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device), "fro")
        return cfg.orth_reg_weight * total / max(len(params), 1)

    steps = itertools.count()

    def after_step() -> None:
        model.base_model.update_and_allocate(next(steps))

    def finish() -> bool:
        if not cfg.rank_pattern:
            return False
        model.base_model.rankallocator.mask_using_rank_pattern(model.base_model.model, cfg.rank_pattern)
        return True

    return TrainingHooks(regularizer, after_step, finish)


def prepare_model(base: Backbone, acfg: AdaptConfig, base_id: str | None = None, total_steps: int | None = None) -> nn.Module:
    """A copy of ``base`` with exactly the method's parameters trainable.

    Returns a ``peft.PeftModel`` for LoRA (its attributes forward to the backbone), else a
    :class:`Backbone`. ``base`` itself is never modified. ``total_steps``: the optimizer steps
    training will take, needed by ``lora.kind: adalora`` (its rank schedule).
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
        wrapped = peft.get_peft_model(model, peft_lora_config(acfg, total_steps))
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
