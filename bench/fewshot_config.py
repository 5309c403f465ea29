"""The few-shot benchmark's config (bench/fewshot.yaml; bench/fewshot-2core.yaml ``extends:`` it): schema, loader, names.

Kept apart from the runner so validators (``cluster/validate.py``, the every-YAML test) can load it
without importing the benchmark's machinery.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rec.config import ConfigError, RecConfig, TenantSource, apply_overrides, config_from_dict, read_yaml_mapping

METHODS = ("popularity", "zero-shot", "zero-shot-init", "zero-shot+center", "zero-shot+whiten", "scratch-sasrec-id",
           "zero-shot+text-prior", "scratch-backbone", "default", "default+center", "default+whiten", "default+cosine", "default+text-prior", "item-terms",
           "item-terms-id", "item-terms-adaptor", "item-terms-id-adaptor", "head", "prompt", "lora", "lora-lowrank-adaptor", "full",
           "lora-meta", "lora-tuned", "text-lora", "text-lora-inbatch")
SCRATCH = ("scratch-sasrec-id", "scratch-backbone")
#: reported once, at K=0: nothing trains (the published backbone / the untrained init it came from)
ZERO_SHOT = ("zero-shot", "zero-shot-init", "zero-shot+center", "zero-shot+whiten", "zero-shot+text-prior")
#: rows scored with a fixed-weight history-to-item text-similarity term added to the model's scores
#: (bench.fewshot.text_prior_fusion; the weight is chosen on the validation users)
TEXT_PRIOR = ("zero-shot+text-prior", "default+text-prior")
#: bench method -> model.* overrides of the published backbone it runs on (issue 17, "keep the title
#: prior reachable"): the same weights, another catalog normalisation or score
BACKBONE_OPTIONS: dict[str, dict[str, Any]] = {
    "zero-shot+center": {"model.catalog_norm": "center"},
    "zero-shot+whiten": {"model.catalog_norm": "whiten"},
    "default+center": {"model.catalog_norm": "center"},
    "default+whiten": {"model.catalog_norm": "whiten"},
    "default+cosine": {"model.score": "cosine"},
}
#: the method a new tenant gets unless it asks for another, with its settings: item-terms (per-item
#: bias from the K users' log-popularity + the popularity floor on the tenant's validation users) with
#: the item-text adaptor trained; chosen side by side with its variants (bench/README.md, few-shot)
DEFAULT_METHOD = ("item-terms", {"adapt.item_terms.train_adaptor": True})
#: bench method -> (registered adaptation method, adapt.* overrides) for the rows run by adapt_tenant
ADAPTED: dict[str, tuple[str, dict[str, Any]]] = {
    "zero-shot": ("zero-shot", {}),
    "zero-shot-init": ("zero-shot", {}),
    "zero-shot+center": ("zero-shot", {}),
    "zero-shot+whiten": ("zero-shot", {}),
    "zero-shot+text-prior": ("zero-shot", {}),
    "default": DEFAULT_METHOD,
    "default+text-prior": DEFAULT_METHOD,
    "default+center": DEFAULT_METHOD,
    "default+whiten": DEFAULT_METHOD,
    "default+cosine": DEFAULT_METHOD,
    "item-terms": ("item-terms", {}),
    "item-terms-id": ("item-terms", {"adapt.item_terms.id_residual": True}),
    "item-terms-adaptor": ("item-terms", {"adapt.item_terms.train_adaptor": True}),
    "item-terms-id-adaptor": ("item-terms", {"adapt.item_terms.id_residual": True, "adapt.item_terms.train_adaptor": True}),
    "head": ("head", {}),
    "prompt": ("prompt", {}),
    "lora": ("lora", {}),
    "lora-lowrank-adaptor": ("lora", {"adapt.lora.train_adaptor": False}),
    "full": ("full", {}),
    "lora-meta": ("lora", {}),
    "lora-tuned": ("lora", {}),
    # LoRA on the item-text encoder (issue 17 item 4): a step re-encodes few items and every epoch the
    # whole catalog (its validation), so smaller batches (more steps per catalog pass), fewer epochs,
    # and both cores (the cost target is "< 5 min on 2 cores")
    "text-lora": ("text-lora", {"adapt.batch_size": 16, "adapt.epochs": 12, "adapt.patience": 4, "adapt.torch_threads": 2}),
    # the same with the softmax over the step's re-encoded items only (no candidate scored with stale weights)
    "text-lora-inbatch": ("text-lora", {"adapt.batch_size": 16, "adapt.epochs": 12, "adapt.patience": 4, "adapt.torch_threads": 2,
                                        "adapt.text_lora.negatives": "in-batch"}),
}
KValue = int | Literal["all"]
ROW_KEYS = ["dataset", "method", "k", "seed", "hr@10", "ndcg@10", "adapt_s", "adapter_bytes"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScratchSettings(_Strict):
    epochs: int = Field(60, ge=1)
    patience: int = Field(5, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(0.0, ge=0.0)


class TuneSettings(_Strict):
    k: int = Field(64, ge=1, description="K of the sweep; its best config is reused for every K")
    num_samples: int = Field(8, ge=1)
    max_concurrent_trials: int | None = Field(2, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0.0)
    grace_period: int = Field(2, ge=1)
    reduction_factor: int = Field(2, ge=2)
    search_space: dict[str, Any] = Field(default_factory=dict)


class QuickSettings(_Strict):
    targets: list[str]
    ks: list[KValue]
    seeds: list[int]
    sources: list[str]
    source_max_users: int = Field(100, ge=10)
    epochs: int = Field(2, ge=1)
    meta: dict[str, Any] = Field(default_factory=dict)
    tune_num_samples: int = Field(2, ge=1)


class BenchConfig(_Strict):
    runs_dir: str = "runs/bench-fewshot"
    data_root: str | None = Field(None, description="relative source paths live here; null = $REC_DATA_ROOT, else "
                                  "../shared/datasets beside the repo (rec.data.paths)")
    sources: list[TenantSource] = Field(min_length=1)
    targets: list[TenantSource] = Field(min_length=1)
    holdout: list[TenantSource] = Field(default_factory=list, description="data.holdout of pretraining")
    ks: list[KValue] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    methods: list[Literal[METHODS]] = Field(min_length=1)  # type: ignore[valid-type]
    num_eval_users: int = Field(500, ge=1)
    pretrain: dict[str, Any] = Field(default_factory=dict, description="dotted RecConfig overrides")
    meta: dict[str, Any] = Field(default_factory=dict, description="dotted meta.* overrides")
    adapt: dict[str, Any] = Field(default_factory=dict, description="dotted adapt.* overrides")
    scratch: ScratchSettings = Field(default_factory=ScratchSettings)
    tune: TuneSettings = Field(default_factory=TuneSettings)
    quick: QuickSettings

    @model_validator(mode="after")
    def _check(self) -> BenchConfig:
        errs = []
        for field in ("sources", "targets", "holdout"):
            names = [s.name for s in getattr(self, field)]
            if None in names or len(set(names)) != len(names):
                errs.append(f"{field}: every entry needs a unique `name`, got {names}")
        paths = {s.path for s in (*self.sources, *self.targets)}
        errs += [f"holdout: {h.name} is also a source or target (it selects the backbone, so it must be a third tenant)"
                 for h in self.holdout if h.path in paths]
        errs += [f"ks: {k} must be >= 0 or 'all'" for k in self.ks if isinstance(k, int) and k < 0]
        held = {"data": {"holdout": [h.model_dump(mode="json") for h in self.holdout]}}
        for key, section in (("pretrain", self.pretrain), ("meta", self.meta), ("adapt", self.adapt), ("quick.meta", self.quick.meta)):
            try:
                rec_config(section, held if key == "pretrain" else None)
            except ConfigError as e:
                errs.append(f"{key}: {e}")
        bad = [n for n in self.quick.targets if n not in {t.name for t in self.targets}]
        bad += [n for n in self.quick.sources if n not in {s.name for s in self.sources}]
        errs += [f"quick: unknown source/target names {bad}"] if bad else []
        if errs:
            raise ValueError("; ".join(errs))
        return self


def rec_config(overrides: dict[str, Any], tree: dict[str, Any] | None = None) -> RecConfig:
    """A RecConfig from dotted overrides (values as YAML/JSON), on top of ``tree``."""
    return config_from_dict(apply_overrides(tree or {}, [f"{k}={json.dumps(v)}" for k, v in overrides.items()]))


def load_bench_config(path: str | Path) -> BenchConfig:
    """Read and validate bench/fewshot.yaml. Raises ``ConfigError`` naming every bad key."""
    p = Path(path)
    tree = read_yaml_mapping(p, "benchmark config", ConfigError, "pass --config bench/fewshot.yaml")
    try:
        return BenchConfig.model_validate(tree)
    except ValidationError as e:
        msgs = [f"{'.'.join(map(str, err['loc'])) or '(root)'}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"{p}: " + "; ".join(msgs)) from None


def with_data_root(bc: BenchConfig, env_value: str | None) -> BenchConfig:
    """``bc`` with every source, held-out and target path made absolute under the data root.

    Args:
        env_value: ``$REC_DATA_ROOT`` as the entry point read it (used when ``data_root`` is null).

    Raises:
        DataError: The data root does not exist (the message names ``data_root`` and the variable).
    """
    from rec.data.paths import data_root, resolve_source

    root = data_root(bc.data_root, env_value)
    update: dict[str, Any] = {k: [resolve_source(s, root) for s in getattr(bc, k)] for k in ("sources", "holdout", "targets")}
    return bc.model_copy(update={**update, "data_root": str(root)})


def portable_source(src: TenantSource, root: str | None) -> dict[str, Any]:
    """``src`` as JSON with paths under ``root`` written relative to it: what settings hashes take, so a
    row's hash names the dataset, never the machine's path to it (a clean clone elsewhere finds the
    committed rows current)."""
    out = src.model_dump(mode="json")
    for k in ("path", "items_path"):
        if root and out.get(k) and Path(out[k]).is_relative_to(root):
            out[k] = Path(out[k]).relative_to(root).as_posix()
    return out


def k_users(k: KValue) -> int | None:
    return None if k == "all" else int(k)
