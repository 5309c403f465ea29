"""Adapter artifacts: PEFT on-disk format plus our manifest, versioned per tenant.

Layout::

    <root>/<tenant>/v<N>/
        adapter_config.json         PEFT's config (LoRA), or the same file naming our method
        adapter_model.safetensors   the trained tensors (absent for zero-shot)
        manifest.json               tenant, backbone checksum, method, hyper-parameters, K,
                                    data hash, metrics, versions, created time, file checksums

LoRA adapters are exactly what ``peft`` writes (``PeftModel.save_pretrained``) and load with
``PeftModel.from_pretrained(backbone, folder)``; PEFT LoRA adapters trained elsewhere on this
backbone load here. Every other method writes the same two files through its registry entry
(``rec.adaptation.registry.AdaptationMethod.save``/``load``): prompt adapters use PEFT's
prompt-tuning names (``prompt_embeddings``, ``num_virtual_tokens``); head/full/item-terms adapters
store their trained tensors under their own names. ``full`` is a whole checkpoint by nature.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from torch import nn

from rec.adaptation.registry import CONFIG_FILE, WEIGHTS_FILE, UnknownMethod, get_method
from rec.config import AdaptConfig
from rec.data.schema import validate_tenant_id
from rec.io.artifacts import ArtifactError, artifact_writer, claim_version, complete_versions, read_manifest
from rec.models.backbone import Backbone

__all__ = ["save_adapter", "load_adapter", "list_versions", "adapter_method"]

CONFIG = CONFIG_FILE
WEIGHTS = WEIGHTS_FILE


def save_adapter(
    model: nn.Module,
    acfg: AdaptConfig,
    tenant: str,
    root: str | Path,
    meta: dict[str, Any],
) -> Path:
    """Publish a new version ``<root>/<tenant>/v<N>`` atomically and return its path.

    The files are the method's (``AdaptationMethod.save``). Concurrent publishers never overwrite
    each other: each claims ``v<N>`` with an atomic rename (:func:`rec.io.artifacts.claim_version`).
    """
    validate_tenant_id(tenant)
    method = get_method(acfg.method)
    manifest = {"tenant": tenant, "method": method.name, "hyperparameters": acfg.model_dump(mode="json"), **meta}

    def write(folder: Path, version: int) -> None:
        with artifact_writer(folder, kind="adapter", meta={**manifest, "version": f"v{version}"}, replace=False) as tmp:
            method.save(model, acfg, tmp)

    return claim_version(Path(root) / tenant, write)


def list_versions(root: str | Path, tenant: str) -> list[int]:
    """Complete versions (with a manifest) of a tenant's adapters, ascending."""
    return complete_versions(Path(root) / validate_tenant_id(tenant))


def adapter_method(folder: str | Path) -> str:
    """The method of an adapter folder: ours from the manifest, or LoRA for a plain PEFT folder."""
    folder = Path(folder)
    if (folder / "manifest.json").is_file():
        return read_manifest(folder, verify=False)["method"]
    cfg = json.loads((folder / CONFIG).read_text())
    if cfg.get("peft_type") == "LORA":
        return "lora"
    raise ArtifactError(f"{folder}: not a LoRA PEFT adapter and no manifest.json; cannot tell its method")


def load_adapter(folder: str | Path, base: Backbone, backbone_checksum: str | None = None) -> tuple[Backbone, dict]:
    """Apply an adapter folder to a copy of ``base`` with its method's ``load``; (scoring backbone, manifest).

    LoRA weights are merged (``merge_and_unload``) so scoring costs the same as the base model.
    A plain PEFT LoRA folder without our manifest is accepted (manifest returned as ``{}``).

    Raises:
        ArtifactError: Missing/corrupt folder, or the adapter was trained on another backbone
            (manifest checksum differs from ``backbone_checksum``), or tensor shapes do not fit.
    """
    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise ArtifactError(f"{folder}: no {CONFIG}; not an adapter folder (expected <root>/<tenant>/v<N>)")
    manifest = read_manifest(folder, kind="adapter") if (folder / "manifest.json").is_file() else {}
    if manifest and backbone_checksum and manifest.get("backbone_checksum") != backbone_checksum:
        raise ArtifactError(
            f"{folder} was trained on backbone {str(manifest.get('backbone_checksum'))[:12]}…, not on this one "
            f"({backbone_checksum[:12]}…): re-run `rec adapt` against this backbone"
        )
    try:
        method = get_method(manifest.get("method") or adapter_method(folder))
    except UnknownMethod as e:
        raise ArtifactError(f"{folder}: {e}") from None
    try:
        model = method.load(folder, copy.deepcopy(base).eval())
    except (RuntimeError, KeyError, ValueError) as e:
        raise ArtifactError(f"{folder}: adapter does not fit this backbone ({str(e).splitlines()[0]})") from None
    return model.eval(), manifest
