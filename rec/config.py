"""Typed configuration shared by the CLI, Ray Train, Ray Tune and the Serve app builder.

One YAML file (or none: every field has a default) plus dotted ``key.sub=value`` overrides gives a
:class:`RecConfig`. Unknown keys are errors that name the key; all errors are reported at once.

Example::

    cfg = load_config("configs/beauty.yaml", ["train.epochs=3", "model.d_model=128"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from rec.adaptation.methods.lora import LORA_TARGETS, LoraConfig  # noqa: F401 - re-exported: the LoRA section's types
from rec.adaptation.registry import method_config_fields, method_names
from rec._config_base import _Strict
from rec.config_fed import FedConfig  # noqa: F401 - re-exported: the ``fed`` section

def data_formats() -> tuple[str, ...]:
    """Every ``data.sources[].format``: the file loaders' formats (``rec.data.loaders.FORMATS``) plus ``synthetic``."""
    from rec.data.loaders import FORMATS  # here, not at the top: the loaders import this module

    return ("synthetic", *FORMATS)


#: environment variable the entry points (CLI, benchmarks) read for the data root when data.root is unset
DATA_ROOT_ENV = "REC_DATA_ROOT"


class ConfigError(ValueError):
    """A configuration file or override is invalid. The message lists every problem."""


class SyntheticConfig(_Strict):
    """The embedded, license-clean default dataset (see ``rec.data.synthetic``)."""

    tenants: int = Field(4, ge=1, le=64)
    users_per_tenant: int = Field(400, ge=4)
    items_per_tenant: int = Field(300, ge=10)
    topics: int = Field(8, ge=2, description="latent preference clusters shared across tenants")
    min_len: int = Field(6, ge=3)
    max_len: int = Field(30, ge=3)
    seed: int = 0


class TenantSource(_Strict):
    """One tenant loaded from files. ``path`` is the dataset folder (or file for ``generic``).

    A relative ``path`` / ``items_path`` is read from the data root (``data.root``, see
    ``rec.data.paths``); an absolute one as it is.
    """

    format: str = Field(description="a loader format of rec.data.loaders.FORMATS (docs/data-formats.md)")
    path: str = Field("", description="dataset folder (generic: file); relative = under data.root")
    name: str | None = Field(None, description="tenant id; default derived from the path")
    subset: str | None = Field(None, description="file stem inside the folder, e.g. 'Beauty' for s3rec")
    max_users: int | None = Field(None, ge=1, description="keep a seeded sample of users")
    seed: int = 0
    # generic CSV/Parquet column mapping
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str | None = "timestamp"
    items_path: str | None = Field(None, description="generic: item table (item_id + text columns)")
    text_cols: list[str] = Field(default_factory=lambda: ["title"])

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        known = data_formats()
        if v not in known:
            raise ValueError(f"unknown data format {v!r}: choose from {list(known)}")
        return v


class DataConfig(_Strict):
    root: str | None = Field(
        None,
        description=f"folder that relative source paths are read from; null = ${DATA_ROOT_ENV} (CLI and benchmarks), "
        "else ../shared/datasets beside the repository",
    )
    sources: list[TenantSource] = Field(default_factory=list, description="empty = synthetic default")
    holdout: list[TenantSource] = Field(
        default_factory=list,
        description="held-out tenants, never trained on: ranked zero-shot from item text after every "
        "epoch (transfer validation; train.select_on=holdout selects the checkpoint on them)",
    )
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    min_seq_len: int = Field(3, ge=3, description="users with fewer interactions are dropped (need train+valid+test)")
    max_seq_len: int = Field(50, ge=2, description="history window fed to the model")


class TextConfig(_Strict):
    """Item-text encoder. ``model`` = 'minilm' (packaged all-MiniLM-L6-v2), an HF name or a path."""

    model: str = "minilm"
    batch_size: int = Field(256, ge=1)
    max_length: int = Field(64, ge=8, le=512)
    num_threads: int = Field(2, ge=1)
    device: str = Field(
        "cpu", pattern=r"^(cpu|auto|cuda(:\d+)?)$",
        description="where the encoder runs: cpu, cuda[:N], or auto (cuda when torch sees a GPU)",
    )
    cache_dir: str = ".cache/rec-text"
    allow_download: bool = Field(False, description="allow fetching a hub model (never by default)")
    item_format: Literal["joined", "kv"] = Field(
        "joined", description='joined: the loaders\' "title | brand: x | categories: y"; kv: "title: t; brand: x; category: y" '
        "(rec.text.item_format; a title without attributes stays the plain title)")


class ModelConfig(_Strict):
    """Backbone hyper-parameters (see ``rec.models.backbone.Backbone``)."""

    text_dim: int = Field(384, ge=1)
    d_model: int = Field(64, ge=8)
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(2, ge=1)
    ffn_mult: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    max_len: int = Field(50, ge=2)
    use_text: bool = True
    use_id_embedding: bool = False
    adaptor_hidden: int = Field(0, ge=0, description="0 = linear adaptor, else MLP hidden size")
    adaptor_init: Literal["random", "identity"] = Field(
        "random", description="random: a learned projection; identity: a fixed projection (the identity at equal widths) "
        "plus a learned residual that starts at zero, so the untrained adaptor is the title geometry (needs adaptor_hidden=0)")
    loss: Literal["ce", "sampled", "infonce"] = Field(
        "ce", description="ce: full softmax over the own catalog; sampled: uniform sampled softmax; infonce: in-batch "
        "negatives across every tenant of the batch, cosine at train.infonce_temperature (rec.training.infonce)")
    num_negatives: int = Field(256, ge=1, description="sampled softmax negatives per batch")
    temperature: float | None = Field(
        None, gt=0.0,
        description="logits are divided by it; null = sqrt(d_model) for text models, 1 for ID-only",
    )
    input_scale: float | None = Field(
        None, gt=0.0,
        description="item vectors entering the encoder are multiplied by it; null = sqrt(d_model) for ID-only "
                    "models (SASRec's embedding scaling), 1 for text models",
    )
    catalog_norm: Literal["none", "center", "whiten"] = Field(
        "none", description="per-catalog normalisation of the item text vectors before the adaptor, from the "
                            "catalog's own statistics (rec.models.catalog_norm): none, center, whiten (centred + ZCA)")
    score: Literal["dot", "cosine"] = Field(
        "dot", description="dot: h.c/temperature; cosine: exp(logit_scale) * cos(h, c) with a learned logit_scale")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        errs = []
        if self.d_model % self.n_heads:
            errs.append(f"model.d_model={self.d_model} must be divisible by model.n_heads={self.n_heads}")
        if not (self.use_text or self.use_id_embedding):
            errs.append("model.use_text and model.use_id_embedding are both false: enable at least one")
        if self.adaptor_init == "identity" and self.adaptor_hidden:
            errs.append("model.adaptor_init=identity needs the linear adaptor: set model.adaptor_hidden=0")
        if errs:
            raise ValueError("; ".join(errs))
        return self


class TextLoraConfig(_Strict):
    """``rec pretrain`` with LoRA on the item-text encoder's top layers, trained with the backbone (docs/adaptation.md)."""

    layers: int = Field(0, ge=0, description="top text-encoder layers that get LoRA; 0 = off (the frozen encoder)")
    rank: int = Field(8, ge=1, description="LoRA rank (alpha = 2 * rank)")
    lr: float | None = Field(None, gt=0.0, description="learning rate of the LoRA weights; null = train.lr")
    preserve_weight: float = Field(1.0, ge=0.0, description="weight of mean(1 - cos(tuned, frozen)) over each step's items")


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float = Field(1.0, gt=0.0)
    patience: int = Field(3, ge=1, description="early stopping: epochs without val NDCG@10 gain")
    lr_decay: float | None = Field(
        None, gt=0.0, lt=1.0, description="reduce on plateau (torch ReduceLROnPlateau on the early-stopping metric): "
        "multiply every learning rate by this after train.lr_decay_patience epochs without a gain; null = constant")
    lr_decay_patience: int = Field(2, ge=1, description="train.lr_decay: epochs without a gain before each decay")
    min_lr: float = Field(1e-5, ge=0.0, description="train.lr_decay: no learning rate goes below this")
    seed: int = 0
    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP ranks)")
    cpus_per_worker: float = Field(1.0, gt=0.0)
    use_gpu: bool = False
    torch_threads: int = Field(1, ge=1)
    max_failures: int = Field(2, ge=0, description="worker failures tolerated (resume from last checkpoint)")
    max_eval_users: int | None = Field(2000, ge=1, description="per tenant, seeded sample for val/test")
    output_dir: str = "runs/pretrain"
    run_name: str = "pretrain"
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    resume: bool = Field(True, description="continue a run with the same run_name/output_dir if one exists")
    select_on: Literal["valid", "holdout"] = Field(
        "valid",
        description="what picks the published checkpoint and drives early stopping: the sources' own "
        "validation NDCG@10, or zero-shot NDCG@10 on data.holdout (the untrained init is a candidate too)",
    )
    infonce_temperature: float = Field(0.07, gt=0.0, description="model.loss=infonce: cosine similarities are divided by it (UniSRec: 0.07)")
    mixture: Literal["natural", "balanced"] = Field(
        "natural", description="natural: batches mix tenants by their row counts; balanced: every batch draws each tenant at "
        "train.mixture_weights (default equal shares; rec.training.mixture)")
    mixture_weights: dict[str, float] = Field(
        default_factory=dict, description="train.mixture=balanced: relative share per tenant name (missing names: 1.0)")
    text_lora: TextLoraConfig = Field(default_factory=TextLoraConfig)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.lr_decay is not None and self.lr_decay_patience >= self.patience:
            raise ValueError(f"train.lr_decay_patience={self.lr_decay_patience} >= train.patience={self.patience}: early "
                             "stopping would end the run before the learning rate ever decays; set it below train.patience")
        return self


#: the metric that early-stops, selects checkpoints and is always reported (full ranking)
PRIMARY_METRIC = "ndcg@10"
PRIMARY_K = 10


class EvalConfig(_Strict):
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    exclude_history: bool = False
    batch_size: int = Field(256, ge=1)

    @property
    def ks_with_primary(self) -> list[int]:
        """``ks`` plus the primary metric's cut-off (it drives early stopping, so it is always computed)."""
        return sorted(set(self.ks) | {PRIMARY_K})

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError("eval.ks must be a non-empty list of positive integers")
        return sorted(set(v))


class RayConfig(_Strict):
    address: str | None = Field(None, description="None = start a local Ray; 'auto' or ray://... = connect")
    num_cpus: int | None = Field(None, ge=1, description="local Ray only")
    storage_path: str | None = Field(None, description="Ray Train/Tune storage; default <output_dir>/ray")


class _AdaptCommon(_Strict):
    """Few-shot adaptation of a pretrained backbone to one tenant (``rec adapt``, ``rec tune``).

    ``method`` names a registered adaptation method (``rec.adaptation.registry``); each method adds
    its own section (``adapt.lora``, ``adapt.prompt_length``, ``adapt.item_terms``, ...), see
    :data:`AdaptConfig`.
    """

    method: str = Field("lora", description="a registered adaptation method (rec adapt --help lists them)")
    tenant: str | None = Field(None, description="tenant id among data's tenants (default: the only/last one)")
    k_users: int | None = Field(64, ge=1, description="training users; null = all non-held-out users")
    n_first: int | None = Field(None, ge=2, description="keep only each training user's first N interactions")
    num_eval_users: int | None = Field(None, ge=1, description="held-out users (default: eval_fraction)")
    eval_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    epochs: int = Field(40, ge=1)
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(64, ge=1)
    # 8, not 3: LoRA's first update dips validation below the start (B=0 init), and with patience
    # 3 it stopped at the untrained start on every K=all target (bench/README, few-shot section).
    patience: int = Field(8, ge=1, description="early stopping: epochs without val NDCG@10 gain")
    seed: int = 0
    torch_threads: int = Field(1, ge=1, description="1 keeps concurrent adaptations/Tune trials from oversubscribing cores")
    output_root: str = Field("adapters", description="adapters/<tenant>/v<N>/")

    @field_validator("method")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v not in method_names():
            raise ValueError(f"{v!r} is not a registered adaptation method: choose one of {method_names()}")
        return v


#: The adaptation config: the common fields plus every registered method's section.
AdaptConfig = create_model("AdaptConfig", __base__=_AdaptCommon, __module__=__name__, __doc__=_AdaptCommon.__doc__,
                           **method_config_fields())


class MetaConfig(_Strict):
    """Reptile meta-learned initialization (Nichol, Achiam & Schulman, 2018), ``rec meta``.

    One episode = one source tenant: ``support_users`` users' sequences, ``inner_steps`` optimizer
    steps on a copy of the weights, then ``theta += outer_lr * mean(theta' - theta)`` over the
    episodes of every Ray Train worker (``train.num_workers``, ``train.max_failures``, ... apply).
    """

    outer_epochs: int = Field(5, ge=1, description="checkpoint + report after each outer epoch")
    meta_iterations: int = Field(50, ge=1, description="outer (meta) steps per outer epoch")
    episodes_per_iteration: int = Field(1, ge=1, description="episodes per worker per meta step")
    support_users: int = Field(32, ge=1, description="users sampled per episode (one tenant)")
    inner_steps: int = Field(5, ge=1, description="optimizer steps on the support users per episode")
    inner_lr: float = Field(1e-3, gt=0.0)
    inner_optimizer: Literal["adam", "sgd"] = "adam"
    outer_lr: float = Field(0.5, gt=0.0, le=1.0, description="Reptile epsilon")
    anneal_outer_lr: bool = Field(True, description="decay epsilon linearly to 0 over the run (as in the paper)")
    seed: int = 0
    output_dir: str = "runs/meta"
    run_name: str = "meta"


from rec.io.formats import ADAPTER_DTYPES, CATALOG_DTYPES, MODEL_VARIANTS  # noqa: E402 - one list each, shared with serving


class ExportConfig(_Strict):
    """``rec export``, ``rec export-tenant``, ``rec publish``: how serving artifacts are written.

    The commands' flags (``--int8``, ``--catalog-dtype``, ``--opset``, ``--no-real-data``,
    ``--threads``) are shortcuts for these keys, so a YAML config can hold them too.
    """

    int8: bool = Field(False, description="also write the int8 serving model (ORT dynamic quantization); with --merged: the merged model's")
    catalog_dtype: Literal[CATALOG_DTYPES] = Field("fp32", description="storage of a tenant's catalog matrix in its bundle")  # type: ignore[valid-type]
    opset: int | None = Field(None, ge=17, description="ONNX opset (default: the exporter's)")
    real_data_parity: bool = Field(True, description="check the fp32 export on real rows of a tenant too, not only random inputs")
    threads: int = Field(1, ge=1, le=64, description="torch threads while exporting")


class DemoConfig(_Strict):
    """``rec demo``: the whole story on the synthetic default (see ``rec.demo``)."""

    output_dir: str = Field("runs/demo", description="report, artifacts and serving root (replaced each run)")
    source_tenants: int = Field(4, ge=1, le=32, description="synthetic tenants the backbone pretrains on")
    tuned_tenants: int = Field(3, ge=1, le=16, description="new tenants adapted by the sweep")
    sweep: str = Field("tuning/configs/quick.yaml", description="sweep YAML for the tuned tenants")
    onboard_method: Literal["lora", "prompt", "head"] = "lora"
    onboard_k_users: int = Field(64, ge=1, description="users of the onboarding tenant it adapts on")
    # int8 on purpose (the CLI's export default is fp32): the demo shows the compressed serving path
    model_variant: Literal[MODEL_VARIANTS] = "int8"  # type: ignore[valid-type]
    catalog_dtype: Literal[CATALOG_DTYPES] = "int8"  # type: ignore[valid-type]
    http_port: int = Field(8000, ge=1, le=65535)
    requests_per_tenant: int = Field(20, ge=1)
    keep_serving: bool = Field(False, description="leave Ray Serve running after the report (Ctrl-C to stop)")
    verbose: bool = Field(False, description="show Ray/Tune worker logs")
    # greedy by default: on the demo's tenant thompson (FeedbackSettings defaults) explored its way to 0.70-0.81x the
    # static model's HR@10 over the replay, greedy + the online prior to 0.99-1.07x (docs/feedback-loop.md)
    feedback_policy: str = Field("greedy", description="exploration policy the zero-shot tenant learns with in the feedback stage")
    feedback_windows: int = Field(3, ge=1, description="feedback stage: replay windows before the re-adaptation round")
    feedback_window_events: int = Field(150, ge=10, description="feedback stage: replayed interactions per window")
    feedback_holdout_users: int = Field(20, ge=1, description="feedback stage: the readapt gate's held-out users")
    feedback_organic: bool = Field(
        True, description="feedback stage: a true next item that was not shown is posted as a purchase made elsewhere (no request_id)")

    @field_validator("feedback_policy")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        from rec.serving.policies import POLICIES  # numpy only; the serving layer's own list

        if v not in POLICIES:
            raise ValueError(f"{v!r} is not an exploration policy: choose one of {', '.join(POLICIES)}")
        return v


class GuardrailConfig(_Strict):
    """``feedback.readapt.guardrail``: roll a version back when its live click-through drops."""

    margin: float = Field(0.01, ge=0.0, le=1.0,
                          description="roll back when the current version's CTR < the previous version's CTR - margin (absolute)")
    min_impressions: int = Field(500, ge=1, description="impressions each of the two versions needs before the guardrail judges")


class ReadaptConfig(_Strict):
    """``feedback.readapt``: re-adaptation from the event log (``rec readapt``, ``rec readapt-trigger``).

    Training hyper-parameters are ``adapt.*`` (the method's own section comes from the serving
    adapter's manifest, so the warm start fits).
    """

    min_events: int = Field(200, ge=1, description="interactions (clicks, purchases, asks naming a user and a history) a tenant needs before its first round")
    every_events: int = Field(2000, ge=1, description="trigger: new interactions since the last round")
    every_minutes: float = Field(60.0, gt=0.0, description="trigger: minutes since the last round (with >= 1 new event)")
    min_gain: float = Field(0.0, ge=-1.0, le=1.0, description="publish only if the new NDCG@10 > the current one + min_gain on the gate set (a tie keeps the live version)")
    holdout_users: int = Field(50, ge=1, description="gate: users whose most recent event is held out (the latest ones)")
    min_train_users: int = Field(20, ge=2, description="users with >= 2 events needed besides the held-out ones")
    method: str | None = Field(None, description="adaptation method; null = the serving version's (its adapter's hyper-parameters too)")
    job_num_cpus: float = Field(1.0, gt=0.0, description="CPUs the trigger asks for each submitted readapt job")
    resubmit_attempts: int = Field(1, ge=0, le=10, description="trigger: resubmissions of a round whose job ended without a round "
                                                               "record (killed, node lost, or refused for too few users) before "
                                                               "waiting for every_events new events again")
    guardrail: GuardrailConfig = Field(default_factory=GuardrailConfig)

    @field_validator("method")
    @classmethod
    def _registered(cls, v: str | None) -> str | None:
        if v is not None and v not in method_names():
            raise ValueError(f"{v!r} is not a registered adaptation method: choose one of {method_names()} or null")
        return v


class FeedbackConfig(_Strict):
    """Learning from served feedback (``rec.feedback``)."""

    readapt: ReadaptConfig = Field(default_factory=ReadaptConfig)


class RecConfig(_Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    adapt: AdaptConfig = Field(default_factory=AdaptConfig)
    meta: MetaConfig = Field(default_factory=MetaConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    fed: FedConfig = Field(default_factory=FedConfig)

    @model_validator(mode="after")
    def _cross(self) -> RecConfig:
        if self.model.max_len < self.data.max_seq_len:
            raise ValueError(
                f"model.max_len={self.model.max_len} < data.max_seq_len={self.data.max_seq_len}: "
                "raise model.max_len or lower data.max_seq_len"
            )
        if self.train.select_on == "holdout" and not self.data.holdout:
            raise ValueError("train.select_on=holdout needs held-out tenants: add data.holdout entries or set train.select_on=valid")
        if self.data.holdout and not self.model.use_text:
            raise ValueError("data.holdout tenants are ranked zero-shot from item text: set model.use_text=true or remove data.holdout")
        if self.train.text_lora.layers and not (self.model.use_text and self.model.loss == "infonce"):
            raise ValueError(f"train.text_lora.layers={self.train.text_lora.layers} trains the item-text encoder on each batch's "
                             "items: set model.use_text=true model.loss=infonce, or train.text_lora.layers=0")
        return self


# --- loading ----------------------------------------------------------------------------------
def _parse_value(raw: str) -> Any:
    """Parse an override value with YAML rules (numbers, bools, lists, null)."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict (list items by index: ``data.sources.0.path``)."""
    errors = []
    for ov in overrides:
        if "=" not in ov:
            errors.append(f"override {ov!r} is not key=value (e.g. train.epochs=3)")
            continue
        key, raw = ov.split("=", 1)
        parts = key.strip().split(".")
        node: Any = tree
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    errors.append(f"override {key!r}: {'.'.join(parts[:i])} has no item {part}")
                    break
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
        else:
            last = parts[-1]
            if isinstance(node, list) and last.isdigit() and int(last) < len(node):
                node[int(last)] = _parse_value(raw)
            elif isinstance(node, dict):
                node[last] = _parse_value(raw)
            else:
                errors.append(f"override {key!r}: cannot set {last!r} here")
    if errors:
        raise ConfigError("; ".join(errors))
    return tree


def _format_errors(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {loc!r}")
        else:
            lines.append(f"{loc}: {err['msg']}" + (f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""))
    return "; ".join(lines)


def config_from_dict(tree: dict[str, Any], model: type[BaseModel] = RecConfig) -> Any:
    try:
        return model.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(f"invalid config: {_format_errors(e)}") from None


EXTENDS_KEY = "extends"


def merge_trees(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, anything else (lists too) is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_trees(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml_mapping(path: str | Path, what: str, error: type[Exception], hint: str, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping; any problem raises ``error`` naming the file.

    A top-level ``extends: other.yaml`` (relative to this file) reads that file first and applies
    this one on top (:func:`merge_trees`), so a variant states only what it changes.

    Args:
        what: How the message names the file, e.g. "config file", "sweep file".
        hint: What to do when the file is missing.
    """
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} {p} not found: {hint}")
    try:
        tree = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{what} {p} is not valid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise error(f"{what} {p}: top level must be a mapping, got {type(tree).__name__}")
    if EXTENDS_KEY not in tree:
        return tree
    parent = tree.pop(EXTENDS_KEY)
    if not isinstance(parent, str) or not parent:
        raise error(f"{what} {p}: {EXTENDS_KEY} must be the path of another YAML file (relative to this one), got {parent!r}")
    base_path = (p.parent / parent).resolve()
    if base_path in _seen or base_path == p.resolve():
        raise error(f"{what} {p}: {EXTENDS_KEY} forms a cycle through {base_path}; remove one of the {EXTENDS_KEY} keys")
    base = read_yaml_mapping(base_path, what, error, f"fix {EXTENDS_KEY}: in {p}", (*_seen, p.resolve()))
    return merge_trees(base, tree)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, model: type[BaseModel] = RecConfig,
                data_root: str | None = None, base: dict[str, Any] | None = None) -> Any:
    """Load a YAML config (or defaults when ``path`` is None) and apply dotted overrides.

    Args:
        base: Start from this tree instead of a file (e.g. a backbone's own config), when ``path`` is None.
        data_root: ``data.root`` when neither the file nor the overrides set it (the CLI passes
            ``$REC_DATA_ROOT`` here: the library itself never reads the environment).

    Raises:
        ConfigError: Missing/unreadable file, invalid YAML, unknown keys, bad values — all named.
    """
    tree: dict[str, Any] = dict(base or {})
    if path is not None:
        tree = read_yaml_mapping(path, "config file", ConfigError, "pass an existing YAML file (see configs/)")
    tree = apply_overrides(tree, list(overrides or []))
    if data_root and model is RecConfig and isinstance(tree.get("data", {}), dict) and tree.get("data", {}).get("root") is None:
        tree.setdefault("data", {})["root"] = data_root
    return config_from_dict(tree, model)


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
