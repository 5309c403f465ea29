"""The adaptation-method registry: every method is one :class:`AdaptationMethod`, found by name.

A method declares, in one module under ``rec/adaptation/methods/``:

- what trains (:meth:`AdaptationMethod.prepare`: a copy of the backbone with exactly its
  parameters trainable, plus optional training hooks and an ``after_training`` step);
- how it is saved and loaded (:meth:`~AdaptationMethod.save` / :meth:`~AdaptationMethod.load`: a
  PEFT-format adapter folder, see ``rec.adaptation.artifacts``);
- how it is exported into a tenant bundle (:attr:`~AdaptationMethod.export`, an
  :class:`ExportKind`, and :meth:`~AdaptationMethod.bundle_inputs` for per-row graph inputs);
- its config section (:attr:`~AdaptationMethod.config_fields`, merged into ``rec.config.AdaptConfig``)
  and its Ray Tune search space (:attr:`~AdaptationMethod.search_space`, dotted keys).

The CLI's ``--method`` choices, ``adapt.method`` validation, ``AdaptConfig``'s sections, sweep
files and export all read this registry; nobody compares method strings. Every module of the
``rec.adaptation.methods`` package is imported on the first lookup and registers its method with
:func:`register`, so adding a method is adding one file there (docs/adaptation.md).

This module and the method modules import only pydantic and the standard library at import time
(torch and peft inside the methods' functions): ``rec.config`` reads the registry, and reading a
config must not load torch.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # annotations only: importing the registry must not import torch
    import numpy as np
    import torch
    from torch import nn

    from rec.models.backbone import Backbone
    from rec.training.checkpoint import LoadedBackbone

__all__ = [
    "AdaptContext",
    "AdaptationMethod",
    "BundleInputs",
    "ExportKind",
    "MethodConfig",
    "TrainingHooks",
    "UnknownMethod",
    "WarmStartError",
    "all_methods",
    "get_method",
    "method_config_fields",
    "method_names",
    "config_owner",
    "register",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
]

#: PEFT's file names: the adapter folder layout every method writes (rec.adaptation.artifacts)
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


class ExportKind(str, Enum):
    """How a method's adapter reaches serving (``rec.export.tenant_bundle``)."""

    BASE = "base"  # nothing to add: the shared graph and the tenant's text catalog (zero-shot)
    CATALOG = "catalog"  # baked into the tenant's catalog matrix (and item bias): head, item terms
    GRAPH_INPUTS = "graph-inputs"  # per-row inputs of the shared graph (LoRA tensors, prompt vectors)
    MERGED_ONLY = "merged-only"  # changes every weight: only a merged per-tenant model serves it (full)


class UnknownMethod(ValueError):
    """A method name that no module of ``rec.adaptation.methods`` registered."""


class WarmStartError(ValueError):
    """An adapter folder's tensors do not fit the model a warm start was asked to begin from."""


class MethodConfig(BaseModel):
    """Base of a method's config section (``adapt.<section>``): unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainingHooks(NamedTuple):
    """What a method adds to the training loop (``rec.training.loop.train_epoch``); all None for most."""

    regularizer: Callable[[], torch.Tensor] | None = None  # added to every step's loss
    after_step: Callable[[], None] | None = None  # after every optimizer step, gradients still set
    finish: Callable[[], bool] | None = None  # once, after the best epoch's weights are restored
    # before every step's forward, with the batch's (inputs, targets) (B, T) item indices (text-lora:
    # which items' text to re-encode)
    before_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None


@dataclass(frozen=True)
class AdaptContext:
    """What a method may know about the adaptation run besides its config.

    Attributes:
        base_id: Written as PEFT's ``base_model_name_or_path``.
        total_steps: Optimizer steps training will take (AdaLoRA's rank schedule); None if unknown.
        num_items: The tenant's catalog size ``N``.
        item_popularity: ``(N,)`` interactions of each item in the K training users' sequences.
        item_text: The tenant's ``N`` item texts, raw (methods that re-encode text: text-lora); None if unknown.
        text: The backbone's ``rec.config.TextConfig`` (encoder, max length, item format); None if unknown.
    """

    base_id: str | None
    total_steps: int | None
    num_items: int
    item_popularity: np.ndarray
    item_text: list[str] | None = None
    text: Any = None


@dataclass
class BundleInputs:
    """A method's tensors for the shared serving graph (see ``rec.export.tenant_bundle``).

    ``lora``: per encoder projection ``(A [r,in], B*scaling [out,r])``; ``prompt``: ``[P, D]``.
    """

    lora: dict[str, tuple[np.ndarray, np.ndarray]]
    prompt: np.ndarray | None = None


class AdaptationMethod:
    """One adaptation method (see module doc). Subclass, set the class attributes, override.

    Class attributes:
        name: The ``adapt.method`` value, the ``--method`` choice and the manifests' ``method``.
        summary: One line for ``--help`` and the docs.
        export: How the adapter is served (:class:`ExportKind`).
        config_fields: ``{field: (type, default or pydantic Field)}`` added to ``AdaptConfig``
            (``adapt.<field>``); a section is a :class:`MethodConfig` subclass.
        search_space: ``{dotted key: sweep-file entry}`` Ray Tune searches for this method
            (``tuning.search_spaces.method_search_space``), e.g. ``{"adapt.lr": {"loguniform": [...]}}``.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    export: ClassVar[ExportKind]
    config_fields: ClassVar[dict[str, tuple[Any, Any]]] = {}
    search_space: ClassVar[dict[str, Any]] = {}

    # --- what trains -------------------------------------------------------------------------
    def prepare(self, model: Backbone, acfg: Any, ctx: AdaptContext) -> nn.Module:
        """Make the method's parameters of ``model`` trainable; return the model to train.

        ``model`` is a private copy of the backbone in train mode with every parameter frozen;
        the method may wrap it (PEFT) or return it changed.
        """
        return model

    def training_hooks(self, model: nn.Module) -> TrainingHooks:
        return TrainingHooks()

    def after_training(self, model: nn.Module, acfg: Any, ctx: AdaptContext,
                       validate: Callable[[nn.Module], dict[str, float]], best: dict[str, float]) -> dict[str, Any]:
        """Once, after the best epoch's weights are restored; may change ``model`` in place.

        Args:
            validate: Validation metrics of a model on the tenant's held-out users.
            best: The restored model's validation metrics.

        Returns:
            Manifest fields recording what was decided (``{}``: nothing to record).
        """
        return {}

    # --- how it is saved (PEFT format) -------------------------------------------------------
    def adapter_config(self, acfg: Any) -> dict[str, Any]:
        """``adapter_config.json`` of our own (non-PEFT-library) methods."""
        return {"peft_type": None, "rec_method": self.name, "task_type": None}

    def tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The trained tensors written to ``adapter_model.safetensors`` (none: no file)."""
        return {}

    def save(self, model: nn.Module, acfg: Any, folder: Path) -> None:
        """Write the adapter files into ``folder`` (the manifest is written by the caller)."""
        import json

        from safetensors.torch import save_file

        (folder / CONFIG_FILE).write_text(json.dumps(self.adapter_config(acfg), indent=2))
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors(model).items()}
        if tensors:
            save_file(tensors, str(folder / WEIGHTS_FILE))

    def load(self, folder: Path, model: Backbone) -> Backbone:
        """Apply the adapter in ``folder`` to ``model`` (a private copy of the base); the scoring backbone.

        Raises:
            RuntimeError, KeyError, ValueError: The tensors do not fit (reported as ArtifactError).
        """
        return model

    def warm_start(self, model: nn.Module, folder: Path) -> None:
        """Start training from an earlier adapter of this method: copy its saved tensors into
        ``model`` (what :meth:`prepare` returned), in place.

        The default copies every tensor :meth:`tensors` names from the folder's weights file, so
        a method that saves its trained tensors under the names it reads them by needs nothing
        more. A folder without a weights file (nothing trained) leaves ``model`` as prepared.

        Raises:
            WarmStartError: The folder's tensors do not fit ``model`` (another catalog size, rank or
                prompt length): re-adapt from scratch or with the earlier hyper-parameters.
        """
        import torch
        from safetensors.torch import load_file

        path = folder / WEIGHTS_FILE
        if not path.is_file():
            return
        saved = load_file(str(path))
        live = self.tensors(model)
        missing = sorted(set(live) - set(saved))
        bad = sorted(k for k in live if k in saved and tuple(saved[k].shape) != tuple(live[k].shape))
        if missing or bad:
            raise WarmStartError(f"{folder}: cannot warm-start {self.name!r} from it: missing tensors {missing[:5]}, "
                             f"other shapes {bad[:5]} (adapted with other hyper-parameters or another catalog)")
        with torch.no_grad():
            for k, t in live.items():
                t.copy_(saved[k].to(t.dtype))

    # --- how it is exported into a tenant bundle ---------------------------------------------
    def bundle_inputs(self, adapter_dir: Path | None, adapted: Backbone, loaded: LoadedBackbone,
                      projections: dict[str, tuple[int, int]]) -> BundleInputs:
        """Per-row inputs of the shared graph (``export == GRAPH_INPUTS``); none by default.

        ``projections``: ``{name: (in, out)}`` of the encoder projections the serving graph adapts.
        Raises ``ValueError`` for tensors the graph cannot take.

        The catalog matrix is always ``adapted``'s item representations (and ``item_bias`` when
        ``adapted`` has one), so catalog-side methods need nothing here.
        """
        return BundleInputs({})


_REGISTRY: dict[str, AdaptationMethod] = {}
_LOCK = threading.RLock()  # a method module may look the registry up while it is being discovered
_discovered = False


def register(method: AdaptationMethod) -> AdaptationMethod:
    """Add ``method`` to the registry (called at the bottom of its module); returns it.

    Raises:
        ValueError: Another method already has this name or claims one of its config fields.
    """
    if not getattr(method, "name", "") or not isinstance(getattr(method, "export", None), ExportKind):
        raise ValueError(f"{type(method).__name__}: an adaptation method needs a name and an ExportKind export")
    other = _REGISTRY.get(method.name)
    if other is not None and type(other) is not type(method):
        raise ValueError(f"adaptation method {method.name!r} is registered twice ({type(other).__name__}, {type(method).__name__})")
    for field in method.config_fields:
        owner = next((m.name for m in _REGISTRY.values() if field in m.config_fields and m.name != method.name), None)
        if owner:
            raise ValueError(f"method {method.name!r}: config field adapt.{field} already belongs to method {owner!r}")
    _REGISTRY[method.name] = method
    return method


def _discover() -> None:
    """Import every module of ``rec.adaptation.methods`` once (each registers its method)."""
    global _discovered
    if _discovered:
        return
    with _LOCK:
        if _discovered:
            return
        package = importlib.import_module("rec.adaptation.methods")
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{info.name}")
        _discovered = True


def all_methods() -> list[AdaptationMethod]:
    """Registered methods, by name."""
    _discover()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def method_names() -> list[str]:
    """Registered method names, sorted: the CLI's choices and what ``adapt.method`` accepts."""
    return [m.name for m in all_methods()]


def get_method(name: str) -> AdaptationMethod:
    """The registered method called ``name``.

    Raises:
        UnknownMethod: No such method; the message lists the registered ones.
    """
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethod(
            f"unknown adaptation method {name!r}: choose one of {method_names()} "
            "(a new method is one module in rec/adaptation/methods/, see docs/adaptation.md)"
        ) from None


def method_config_fields() -> dict[str, tuple[Any, Any]]:
    """Every method's config fields, merged: the method sections of ``AdaptConfig``."""
    out: dict[str, tuple[Any, Any]] = {}
    for m in all_methods():
        out.update(m.config_fields)
    return out


def config_owner(key: str) -> str | None:
    """The method whose config field ``key`` (``adapt.lora.rank`` or ``lora.rank``) belongs to; None if shared."""
    field = key.removeprefix("adapt.").split(".", 1)[0]
    return next((m.name for m in all_methods() if field in m.config_fields), None)
