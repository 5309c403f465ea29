"""Sweep files: a typed YAML over the CLI's dotted config keys, converted to Ray Tune and back.

A sweep file names the tenants and K-shot settings to sweep, and a search space whose keys are the
same dotted keys ``rec`` overrides use (``adapt.lr``, ``adapt.lora.rank``, ...)::

    name: lora-sweep
    tenants: [podcasts, videos]      # null = every configured tenant the backbone never saw
    k_users: [16, 64]                # null inside the list = all available users
    search_space:
      adapt.method: {choice: [lora, prompt]}
      adapt.lr: {loguniform: [1.0e-4, 1.0e-2]}
      adapt.patience: 3              # a plain value fixes the key for every trial
    search: optuna                   # optuna (TPE) | random
    # methods: [lora, item-terms]    # optional: adapt.method over these + each method's own space
    #                                # (rec.adaptation.registry); search_space entries override it
    scheduler: {type: asha, grace_period: 2, reduction_factor: 2}
    num_samples: 8                   # trials per (tenant, K)

Every key is checked against :class:`rec.config.RecConfig` by applying each value the
distribution can produce (each choice, both ends of a range) and validating: a typo'd key or an
impossible value is a :class:`SweepError` naming the key, with every problem listed at once.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rec.config import ConfigError, RecConfig, config_from_dict, read_yaml_mapping

__all__ = [
    "DISTRIBUTIONS",
    "Param",
    "SchedulerSpec",
    "SweepError",
    "SweepSpec",
    "load_sweep",
    "method_search_space",
    "param_from_tune",
    "parse_param",
    "set_dotted",
    "space_from_tune",
    "trial_config",
    "trial_overrides",
]

# name -> number of arguments; the q-variants take [low, high, q].
DISTRIBUTIONS = {
    "choice": None,
    "uniform": 2,
    "loguniform": 2,
    "quniform": 3,
    "qloguniform": 3,
    "randint": 2,
    "lograndint": 2,
    "qrandint": 3,
}
# Keys the sweep sets itself: tenant and K are the experiment's grid, the rest are per-trial plumbing.
RESERVED = {
    "adapt.tenant": "list tenants under the top-level `tenants:`",
    "adapt.k_users": "list K values under the top-level `k_users:`",
    "adapt.torch_threads": "the sweep sets it from cpus_per_trial",
    "adapt.output_root": "the best adapters are published under the base config's adapt.output_root",
}
_SCALARS = (str, int, float, bool, type(None))


class SweepError(ValueError):
    """A sweep file is invalid. The message names every bad key."""


def method_search_space(methods: list[str]) -> dict[str, Any]:
    """``adapt.method`` over ``methods`` plus each method's declared search space (sweep-file entries).

    Raises:
        UnknownMethod: A name the adaptation-method registry does not know.
    """
    from rec.adaptation.registry import get_method

    space: dict[str, Any] = {"adapt.method": {"choice": list(methods)} if len(methods) > 1 else methods[0]}
    for name in methods:
        space.update(get_method(name).search_space)
    return space


@dataclass(frozen=True)
class Param:
    """One search-space entry: ``kind`` is a distribution name or ``"const"``."""

    key: str
    kind: str
    args: tuple[Any, ...]

    @property
    def encoded(self) -> bool:
        """Choices that are not scalars (e.g. lists of LoRA targets) travel through Tune as JSON strings."""
        return self.kind == "choice" and any(not isinstance(a, _SCALARS) for a in self.args)

    def to_tune(self) -> Any:
        """The Ray Tune domain (or the constant itself)."""
        from ray import tune

        a = self.args
        if self.kind == "const":
            return a[0]
        if self.kind == "choice":
            return tune.choice([json.dumps(x) for x in a] if self.encoded else list(a))
        return getattr(tune, self.kind)(*a)

    def decode(self, value: Any) -> Any:
        """A trial's value back to the config value (undoes :attr:`encoded`)."""
        return json.loads(value) if self.encoded and isinstance(value, str) else value

    def samples(self) -> list[Any]:
        """Values that bound what this parameter can produce (checked against RecConfig)."""
        a = self.args
        if self.kind in ("const",):
            return [a[0]]
        if self.kind == "choice":
            return list(a)
        if self.kind in ("randint", "lograndint"):
            return [a[0], a[1] - 1]  # Tune's integer upper bounds are exclusive
        return [a[0], a[1]]

    def max_value(self) -> Any:
        vals = [v for v in self.samples() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return max(vals) if vals else None

    def to_yaml(self) -> Any:
        return self.args[0] if self.kind == "const" else {self.kind: list(self.args)}


def parse_param(key: str, raw: Any) -> Param:
    """One YAML entry -> :class:`Param`. Raises ``ValueError`` saying what is wrong with it."""
    if not isinstance(raw, dict):
        return Param(key, "const", (raw,))
    if len(raw) != 1 or next(iter(raw)) not in DISTRIBUTIONS:
        raise ValueError(
            f"{sorted(raw)} is not a distribution: use one of {sorted(DISTRIBUTIONS)} "
            "(e.g. {loguniform: [1.0e-4, 1.0e-2]}) or a plain value"
        )
    kind, args = next(iter(raw.items()))
    if not isinstance(args, list) or not args:
        raise ValueError(f"{kind} needs a non-empty list, got {args!r}")
    if kind == "choice":
        return Param(key, kind, tuple(args))
    n = DISTRIBUTIONS[kind]
    if len(args) != n or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in args):
        raise ValueError(f"{kind} needs {n} numbers [low, high{', q' if n == 3 else ''}], got {args!r}")
    low, high = args[0], args[1]
    if not low < high:
        raise ValueError(f"{kind}: low={low} must be < high={high}")
    if "log" in kind and low <= 0:
        raise ValueError(f"{kind}: low={low} must be > 0 on a log scale")
    if "int" in kind and not all(float(x).is_integer() for x in args):
        raise ValueError(f"{kind} needs integers, got {args!r}")
    if "int" in kind:
        args = [int(x) for x in args]
    return Param(key, kind, tuple(args))


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Set ``a.b.c`` in a nested dict (creating sections); returns ``tree``."""
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    node[last] = value
    return tree


def _check_key(param: Param, base_tree: dict[str, Any], job: str = "adapt", paired_tree: dict[str, Any] | None = None) -> list[str]:
    """Problems with one key: not tunable, or some value it can take fails RecConfig validation.

    A value is accepted when it validates on ``base_tree`` alone or on ``paired_tree`` (the base with
    the space's other keys at their first value): keys that only make sense together
    (``fed.client_dp`` + ``fed.noise_multiplier``) pass, and one bad key does not mask another's error.
    """
    key = param.key
    if key in RESERVED:
        return [f"search_space key {key!r} is set by the sweep: {RESERVED[key]}"]
    if key.startswith("fed.") and job != "fed":
        return [f"search_space key {key!r}: fed.* keys tune federated runs: set `job: fed`"]
    prefixes = ("adapt.", "fed.") if job == "fed" else ("adapt.",)
    if not key.startswith(prefixes) or key in ("adapt.", "fed."):
        return [
            f"search_space key {key!r}: only {' and '.join(p + '*' for p in prefixes)} keys can be tuned "
            "(the backbone is fixed by --backbone and data.* defines the tenants)"
        ]
    errs = []
    for value in param.samples():
        try:
            config_from_dict(set_dotted(copy.deepcopy(base_tree), key, value))
        except ConfigError as e:
            try:
                if paired_tree is None:
                    raise
                config_from_dict(set_dotted(copy.deepcopy(paired_tree), key, value))
            except ConfigError:
                msg = str(e).removeprefix("invalid config: ")
                errs.append(f"search_space key {key!r} = {value!r}: {msg}")
                break
    return errs


class SchedulerSpec(BaseModel):
    """Trial scheduler. ``asha``: ASHA early stopping, one bracket per (tenant, K); ``fifo``: none."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(2, ge=1, description="adaptation epochs before a trial can be stopped")
    reduction_factor: int = Field(2, ge=2)
    max_t: int | None = Field(None, ge=1, description="default: the largest adapt.epochs the space can sample")


class SweepSpec(BaseModel):
    """A sweep file (see the module docstring). ``num_samples`` counts trials per (tenant, K)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$", description="experiment folder name")
    tenants: list[str] | None = Field(None, min_length=1, description="null = every configured tenant the backbone never saw")
    k_users: list[int | None] | None = Field(None, min_length=1, description="null = the base config's adapt.k_users")
    methods: list[str] | None = Field(
        None, min_length=1,
        description="sweep adapt.method over these registered methods, each with its own declared search space; "
                    "search_space entries override those",
    )
    search_space: dict[str, Any] = Field(default_factory=dict)
    search: Literal["optuna", "random"] = "optuna"
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    num_samples: int = Field(8, ge=1)
    max_concurrent_trials: int | None = Field(None, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0.0)
    seed: int = Field(0, description="seeds the searcher (Optuna TPE / random sampling)")
    publish: bool = Field(True, description="re-run and publish each (tenant, K)'s best trial as an adapter")
    job: Literal["adapt", "fed"] = Field(
        "adapt", description="adapt: each trial is one `rec adapt`; fed: one federated run (`rec fed`, a child process; "
                             "fed.* keys become tunable, each trial publishes its own adapter, scheduler must be fifo)")

    @field_validator("k_users")
    @classmethod
    def _ks(cls, v: list[int | None] | None) -> list[int | None] | None:
        if v is None:
            return v
        bad = [k for k in v if k is not None and k < 1]
        if bad:
            raise ValueError(f"k_users {bad} must be >= 1 (or null for all users)")
        if len(set(v)) != len(v):
            raise ValueError(f"k_users {v} has duplicates")
        return v

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"tenants {v} has duplicates")
        return v

    @model_validator(mode="after")
    def _method_spaces(self) -> SweepSpec:
        if self.methods:
            from rec.adaptation.registry import UnknownMethod

            try:
                space = method_search_space(self.methods)
            except UnknownMethod as e:
                raise ValueError(f"methods: {e}") from None
            self.search_space = {**space, **self.search_space}
        return self

    @model_validator(mode="after")
    def _space(self) -> SweepSpec:
        errs = []
        if self.job == "fed" and self.scheduler.type != "fifo":
            errs.append("job: fed reports once per trial (after its last round), so ASHA cannot stop it early: "
                        "set scheduler: {type: fifo}")
        for key, raw in self.search_space.items():
            try:
                errs += _check_key(parse_param(key, raw), {}, self.job, self._others_set({}, key))
            except ValueError as e:
                errs.append(f"search_space key {key!r}: {e}")
        if errs:
            raise ValueError("; ".join(errs))
        return self

    def params(self) -> list[Param]:
        return [parse_param(k, v) for k, v in self.search_space.items()]

    def swept(self) -> list[Param]:
        """Parameters that vary between trials (constants excluded)."""
        return [p for p in self.params() if p.kind != "const"]

    def check_against(self, base_tree: dict[str, Any]) -> list[str]:
        """Problems of each key applied on top of ``base_tree`` (the sweep's base config)."""
        return [e for p in self.params() for e in _check_key(p, base_tree, self.job, self._others_set(base_tree, p.key))]

    def _others_set(self, base_tree: dict[str, Any], key: str) -> dict[str, Any]:
        """``base_tree`` with every other (valid, tunable) key of the space at its first value, so keys
        that only make sense together (``fed.client_dp`` + ``fed.noise_multiplier``) are checked together."""
        tree = copy.deepcopy(base_tree)
        for k, raw in self.search_space.items():
            if k == key or k in RESERVED or not k.startswith(("adapt.", "fed.")):
                continue
            try:
                set_dotted(tree, k, parse_param(k, raw).samples()[0])
            except ValueError:
                continue  # reported under its own key
        return tree

    def max_epochs(self, base_epochs: int) -> int:
        """The most adaptation epochs a trial can run: ASHA's ``max_t``."""
        if self.scheduler.max_t:
            return self.scheduler.max_t
        for p in self.params():
            if p.key == "adapt.epochs":
                return int(p.max_value())
        return base_epochs

    def tune_space(self) -> dict[str, Any]:
        """``{dotted key: Tune domain or constant}`` (tenant/K are added by the sweep)."""
        return {p.key: p.to_tune() for p in self.params()}


def _format(e: ValidationError) -> str:
    out = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            out.append(f"unknown key {loc!r} (allowed: {sorted(SweepSpec.model_fields)})" if "." not in loc
                       else f"unknown key {loc!r}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(out)


def load_sweep(source: str | Path | dict[str, Any]) -> SweepSpec:
    """Read and validate a sweep file (or an already-parsed mapping).

    Raises:
        SweepError: Missing file, bad YAML, unknown keys (top level or dotted config keys),
            bad distributions or values the config rejects, all listed in one message.
    """
    where = "sweep"
    if isinstance(source, dict):
        tree = source
    else:
        where = str(Path(source))
        tree = read_yaml_mapping(source, "sweep file", SweepError, "pass a YAML file such as tuning/configs/quick.yaml")
    try:
        return SweepSpec.model_validate(tree)
    except ValidationError as e:
        raise SweepError(f"{where}: {_format(e)}") from None


# --- trial config <-> RecConfig -----------------------------------------------------------------
def trial_overrides(spec: SweepSpec, config: dict[str, Any]) -> dict[str, Any]:
    """A trial's Tune config -> ``{dotted key: config value}``, including tenant and K."""
    out = {"adapt.tenant": config["tenant"], "adapt.k_users": config["k_users"]}
    for p in spec.params():
        out[p.key] = p.decode(config[p.key]) if p.key in config else p.args[0]
    return out


def trial_config(base_tree: dict[str, Any], spec: SweepSpec, config: dict[str, Any], torch_threads: int = 1) -> RecConfig:
    """The full :class:`RecConfig` of one trial: base config + the trial's dotted overrides."""
    tree = copy.deepcopy(base_tree)
    for key, value in {**trial_overrides(spec, config), "adapt.torch_threads": torch_threads}.items():
        set_dotted(tree, key, value)
    return config_from_dict(tree)


def param_from_tune(key: str, domain: Any) -> Param:
    """A Ray Tune domain (``tune.loguniform(...)`` ...) back to a :class:`Param`."""
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Quantized

    if isinstance(domain, Categorical):
        cats = list(domain.categories)
        if all(isinstance(c, str) and c[:1] in "[{" for c in cats):  # non-scalar choices (Param.encoded)
            try:
                cats = [json.loads(c) for c in cats]
            except json.JSONDecodeError:
                pass
        return Param(key, "choice", tuple(cats))
    if isinstance(domain, (Float, Integer)):
        sampler = domain.get_sampler()
        q = None
        if isinstance(sampler, Quantized):
            q, sampler = sampler.q, sampler.get_sampler()
        log = isinstance(sampler, LogUniform)
        base = ("log" if log else "") + ("randint" if isinstance(domain, Integer) else "uniform")
        if q is not None:
            return Param(key, "q" + base, (domain.lower, domain.upper, q))
        return Param(key, base, (domain.lower, domain.upper))
    if isinstance(domain, dict) or hasattr(domain, "sample"):
        raise ValueError(f"{key}: cannot convert {type(domain).__name__} to a sweep entry")
    return Param(key, "const", (domain,))


def space_from_tune(space: dict[str, Any]) -> dict[str, Any]:
    """A ``{dotted key: Tune domain}`` space back to the YAML ``search_space`` mapping."""
    return {k: param_from_tune(k, d).to_yaml() for k, d in space.items()}


def k_label(k: int | None) -> str:
    """How a K value is shown in tables and tags (``all`` for every available user)."""
    return "all" if k is None else str(k)
