"""``lora``: low-rank updates of the attention/FFN projections, via PEFT (Hu et al., ICLR 2022).

The item-text adaptor trains in full (``lora.train_adaptor``, PEFT ``modules_to_save``) or gets a
low-rank update of its own; either way it is baked into the tenant's catalog at export, while the
encoder's LoRA tensors are per-row inputs of the shared graph. ``lora.kind: adalora`` = PEFT
AdaLoRA (Zhang et al., ICLR 2023): ranks adapted per projection during training
(:func:`training_hooks`). Adapters are exactly what ``peft`` writes (``save_pretrained``) and load
with ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from rec.adaptation.registry import AdaptationMethod, AdaptContext, BundleInputs, ExportKind, MethodConfig, TrainingHooks, register

if TYPE_CHECKING:
    import numpy as np
    import peft
    from torch import nn

    from rec.models.backbone import Backbone
    from rec.training.checkpoint import LoadedBackbone

__all__ = ["LoraConfig", "LORA_TARGETS", "ENCODER_TARGETS", "peft_lora_config", "training_hooks", "Lora"]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "adaptor.proj")
#: The encoder projections a LoRA adapter may change (the adaptor's projection is catalog-side).
ENCODER_TARGETS = tuple(t for t in LORA_TARGETS if not t.startswith("adaptor."))


class LoraConfig(MethodConfig):
    """LoRA settings (Hu et al., ICLR 2022), applied with PEFT to the named ``nn.Linear`` modules.

    ``kind: adalora`` uses PEFT's AdaLoRA (Zhang et al., ICLR 2023) instead: every projection starts
    at ``adalora_init_rank`` and singular directions are pruned by importance during training until
    the average rank is ``rank``, so ranks adapt per projection.
    """

    kind: Literal["lora", "adalora"] = "lora"
    rank: int = Field(8, ge=1, le=256, description="LoRA rank; adalora: the target average rank")
    alpha: float = Field(16.0, gt=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: list(LORA_TARGETS))
    train_adaptor: bool = Field(
        True,
        description="also train the whole item-text adaptor (PEFT modules_to_save; LoRA on adaptor.proj is then "
                    "skipped): it is baked into the tenant's catalog at export, so serving cost is unchanged. "
                    "Default since the few-shot benchmark showed it within 5% of full fine-tuning on every "
                    "target at K=all where a rank-8 adaptor update was not (bench/README.md); false = a "
                    "low-rank update of adaptor.proj instead (and ID-only backbones, which have no adaptor)",
    )

    adalora_init_rank: int = Field(12, ge=1, le=256, description="adalora: the rank every projection starts at")
    adalora_warmup: float = Field(0.1, ge=0.0, lt=1.0, description="adalora: fraction of training steps before any rank is pruned")
    adalora_final: float = Field(0.3, ge=0.0, lt=1.0, description="adalora: fraction of training steps at the end with ranks fixed")
    adalora_orth_reg: float = Field(0.5, ge=0.0, description="adalora: weight of the orthogonality penalty on A and B")

    @model_validator(mode="after")
    def _adalora(self) -> "LoraConfig":
        if self.kind == "adalora":
            if self.adalora_init_rank < self.rank:
                raise ValueError(f"adapt.lora.adalora_init_rank ({self.adalora_init_rank}) must be >= adapt.lora.rank "
                                 f"({self.rank}), the target average rank AdaLoRA prunes down to")
            if self.adalora_warmup + self.adalora_final >= 1.0:
                raise ValueError("adapt.lora.adalora_warmup + adapt.lora.adalora_final must be < 1: no step would be left "
                                 "to allocate ranks in")
        return self

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if t not in LORA_TARGETS]
        if bad or not v:
            raise ValueError(f"unknown LoRA target modules {bad or v}: choose from {list(LORA_TARGETS)}")
        return v


def peft_lora_config(acfg: Any, total_steps: int | None = None) -> peft.LoraConfig:
    """The PEFT ``LoraConfig`` (or ``AdaLoraConfig``) for our settings (also what ``adapter_config.json`` holds).

    ``lora.train_adaptor``: the item-text adaptor trains in full (``modules_to_save``) and LoRA
    targets only the encoder; the saved adapter then carries the adaptor's weights too.
    AdaLoRA schedules its rank budget over ``total_steps`` optimizer steps (required for it).
    """
    import peft

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


def training_hooks(model: nn.Module) -> TrainingHooks:
    """The :class:`TrainingHooks` AdaLoRA needs; empty ones for plain LoRA.

    PEFT adds AdaLoRA's orthogonality penalty only inside ``PeftModel.forward`` for models that
    return a ``.loss``; our loss calls the backbone directly, so the same penalty (mean Frobenius
    norm of ``A A^T - I`` and ``B^T B - I``) is added here. ``after_step`` runs PEFT's
    ``update_and_allocate`` after every optimizer step: importance scores, then the rank budget
    mask. ``finish`` masks the restored weights with the last rank pattern (early stopping may
    restore an epoch from before the last pruning), so the model evaluated is the one
    ``save_pretrained`` writes, which keeps only the pattern's directions; returns whether it ran.
    """
    import peft
    import torch

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


def _adalora_ab(mod) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001 - peft AdaLoraLayer
    """AdaLoRA's ``B (A * E) * scaling / ranknum`` as plain ``(A', B')``, pruned directions (E = 0) dropped.

    The served rank of each projection is the rank AdaLoRA allocated it.
    """
    e = mod.lora_E["default"].detach().float()  # [r, 1] singular values, 0 where pruned
    keep = e[:, 0] != 0
    a = (mod.lora_A["default"].detach().float() * e)[keep]
    b = mod.lora_B["default"].detach().float()[:, keep] * (float(mod.scaling["default"]) / (float(mod.ranknum["default"]) + 1e-5))
    return a.numpy(), b.numpy()


class Lora(AdaptationMethod):
    name = "lora"
    summary = "PEFT LoRA/AdaLoRA on the encoder projections (per-row graph inputs) + the adaptor (baked into the catalog)"
    export = ExportKind.GRAPH_INPUTS
    config_fields = {"lora": (LoraConfig, Field(default_factory=LoraConfig))}
    search_space = {
        "adapt.lora.rank": {"choice": [4, 8, 16]},
        "adapt.lora.alpha": {"uniform": [4, 32]},
        "adapt.lora.dropout": {"uniform": [0.0, 0.3]},
    }

    def prepare(self, model: Backbone, acfg: Any, ctx: AdaptContext) -> nn.Module:
        import peft
        from torch import nn

        if acfg.lora.train_adaptor and model.adaptor is None:
            raise ValueError("adapt.lora.train_adaptor trains the item-text adaptor, but this backbone has no text adaptor: "
                             "set adapt.lora.train_adaptor=false and drop 'adaptor.proj' from adapt.lora.target_modules")
        if ("adaptor.proj" in acfg.lora.target_modules and not acfg.lora.train_adaptor
                and not isinstance(getattr(model.adaptor, "proj", None), nn.Linear)):
            raise ValueError("adapt.lora.target_modules has 'adaptor.proj' but this backbone's adaptor is not a single Linear")
        wrapped = peft.get_peft_model(model, peft_lora_config(acfg, ctx.total_steps))
        # Set after wrapping: get_peft_model resets it from the (absent) HF model name and warns.
        wrapped.peft_config["default"].base_model_name_or_path = ctx.base_id
        return wrapped

    def training_hooks(self, model: nn.Module) -> TrainingHooks:
        return training_hooks(model)

    def save(self, model: nn.Module, acfg: Any, folder: Path) -> None:
        model.save_pretrained(str(folder))
        (folder / "README.md").unlink(missing_ok=True)

    def warm_start(self, model: nn.Module, folder: Path) -> None:
        """PEFT's own loader into the freshly wrapped model (same targets and rank required)."""
        import peft
        from safetensors.torch import load_file

        from rec.adaptation.registry import WEIGHTS_FILE, WarmStartError

        try:
            result = peft.set_peft_model_state_dict(model, load_file(str(folder / WEIGHTS_FILE)))
        except RuntimeError as e:  # size mismatch: another rank or catalog
            raise WarmStartError(f"{folder}: cannot warm-start 'lora' from it ({str(e).splitlines()[0]})") from None
        if result.unexpected_keys:
            raise WarmStartError(f"{folder}: cannot warm-start 'lora' from it: tensors {result.unexpected_keys[:5]} have no "
                             "place in this LoRA configuration (other target modules?)")

    def load(self, folder: Path, model: Backbone) -> Backbone:
        """LoRA merged (``merge_and_unload``), so scoring costs the same as the base model."""
        import peft

        return peft.PeftModel.from_pretrained(model, str(folder)).merge_and_unload()

    def bundle_inputs(self, adapter_dir: Path | None, adapted: Backbone, loaded: LoadedBackbone,
                      projections: dict[str, tuple[int, int]]) -> BundleInputs:
        """Per encoder projection ``(A [r,in], B*scaling [out,r])`` of the PEFT LoRA/AdaLoRA folder.

        ``projections``: ``{name: (in, out)}`` the serving graph adapts. ``adaptor.proj`` is skipped
        (it is merged into the catalog matrix).

        Raises:
            ValueError: LoRA on a projection the graph does not adapt, or DoRA.
        """
        import copy

        import numpy as np
        import peft
        from peft.tuners.adalora import AdaLoraLayer
        from peft.tuners.lora import LoraLayer

        model = peft.PeftModel.from_pretrained(copy.deepcopy(loaded.model).eval(), str(adapter_dir))
        shapes = projections
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, mod in model.base_model.model.named_modules():
            if not isinstance(mod, LoraLayer) or "default" not in mod.lora_A or name == "adaptor.proj":
                continue
            if name.rsplit(".", 1)[-1] not in ENCODER_TARGETS or name not in shapes:
                raise ValueError(f"{adapter_dir}: LoRA on {name!r}, which the serving graph does not adapt; targets: {sorted(shapes)}")
            if getattr(mod, "use_dora", {}).get("default"):
                raise ValueError(f"{adapter_dir}: DoRA adapters are not servable by the shared graph; export a merged per-tenant model")
            if isinstance(mod, AdaLoraLayer):
                a, b = _adalora_ab(mod)
                if not len(a):
                    continue  # every direction pruned: this projection is the base one
            else:
                a = mod.lora_A["default"].weight.detach().float().numpy()
                b = (mod.lora_B["default"].weight.detach().float() * float(mod.scaling["default"])).numpy()
            out[name] = (np.ascontiguousarray(a), np.ascontiguousarray(b))
        return BundleInputs(out)


METHOD = register(Lora())
