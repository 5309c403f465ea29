"""Adapter artifacts: PEFT on-disk format plus our manifest, versioned per tenant.

Layout::

    <root>/<tenant>/v<N>/
        adapter_config.json         PEFT's config (LoRA), or the same file naming our method
        adapter_model.safetensors   the trained tensors (absent for zero-shot)
        manifest.json               tenant, backbone checksum, method, hyper-parameters, K,
                                    data hash, metrics, versions, created time, file checksums

LoRA adapters are exactly what ``peft`` writes (``PeftModel.save_pretrained``) and load with
``PeftModel.from_pretrained(backbone, folder)``; PEFT LoRA adapters trained elsewhere on this
backbone load here. Prompt adapters use PEFT's prompt-tuning names (``prompt_embeddings``,
``num_virtual_tokens``); head/full adapters store the trained backbone tensors under their own
names. ``full`` is a whole checkpoint by nature.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import peft
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rec.config import AdaptConfig
from rec.data.schema import validate_tenant_id
from rec.io.artifacts import ArtifactError, artifact_writer, complete_versions, next_version_dir, read_manifest
from rec.models.backbone import Backbone

__all__ = ["save_adapter", "load_adapter", "list_versions", "adapter_method"]

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"


def _tensors(model: nn.Module, method: str) -> dict[str, torch.Tensor]:
    bb = model.base_model.model if isinstance(model, peft.PeftModel) else model
    if method == "prompt":
        return {"prompt_embeddings": bb.prompt.detach().cpu().contiguous()}
    if method == "head":
        return {f"adaptor.{k}": v.detach().cpu().contiguous() for k, v in bb.adaptor.state_dict().items()}
    if method == "full":
        return {k: v.detach().cpu().contiguous() for k, v in bb.state_dict().items() if k != "prompt"}
    return {}


def save_adapter(
    model: nn.Module,
    acfg: AdaptConfig,
    tenant: str,
    root: str | Path,
    meta: dict[str, Any],
) -> Path:
    """Publish a new version ``<root>/<tenant>/v<N>`` atomically and return its path.

    Concurrent publishers never overwrite each other: each claims ``v<N>`` with an atomic rename
    and moves on to ``v<N+1>`` if another got there first.
    """
    validate_tenant_id(tenant)
    method = acfg.method
    manifest = {"tenant": tenant, "method": method, "hyperparameters": acfg.model_dump(mode="json"), **meta}
    for _ in range(100):
        dest = next_version_dir(Path(root) / tenant)
        try:
            with artifact_writer(dest, kind="adapter", meta={**manifest, "version": dest.name}, replace=False) as tmp:
                if method == "lora":
                    model.save_pretrained(str(tmp))
                    (tmp / "README.md").unlink(missing_ok=True)
                else:
                    cfg: dict[str, Any] = {"peft_type": None, "rec_method": method, "task_type": None}
                    if method == "prompt":
                        cfg.update(peft_type="PROMPT_TUNING", num_virtual_tokens=acfg.prompt_length)
                    (tmp / CONFIG).write_text(json.dumps(cfg, indent=2))
                    tensors = _tensors(model, method)
                    if tensors:
                        save_file(tensors, str(tmp / WEIGHTS))
            return dest
        except FileExistsError:
            continue
    raise ArtifactError(f"could not claim a new version under {Path(root) / tenant}")


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
    """Apply an adapter folder to a copy of ``base`` and return (scoring backbone, manifest).

    LoRA weights are merged (``merge_and_unload``) so scoring costs the same as the base model.
    A plain PEFT LoRA folder without our manifest is accepted (manifest returned as ``{}``).

    Raises:
        ArtifactError: Missing/corrupt folder, or the adapter was trained on another backbone
            (manifest checksum differs from ``backbone_checksum``), or tensor shapes do not fit.
    """
    import copy

    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise ArtifactError(f"{folder}: no {CONFIG}; not an adapter folder (expected <root>/<tenant>/v<N>)")
    manifest = read_manifest(folder, kind="adapter") if (folder / "manifest.json").is_file() else {}
    if manifest and backbone_checksum and manifest.get("backbone_checksum") != backbone_checksum:
        raise ArtifactError(
            f"{folder} was trained on backbone {str(manifest.get('backbone_checksum'))[:12]}…, not on this one "
            f"({backbone_checksum[:12]}…): re-run `rec adapt` against this backbone"
        )
    method = manifest.get("method") or adapter_method(folder)
    model = copy.deepcopy(base).eval()
    try:
        if method == "lora":
            return peft.PeftModel.from_pretrained(model, str(folder)).merge_and_unload().eval(), manifest
        if method == "zero-shot":
            return model, manifest
        tensors = load_file(str(folder / WEIGHTS))
        if method == "prompt":
            model.prompt = nn.Parameter(tensors["prompt_embeddings"], requires_grad=False)
        elif method == "head":
            model.adaptor.load_state_dict({k.removeprefix("adaptor."): v for k, v in tensors.items()})
        elif method == "full":
            model.load_state_dict(tensors)
        else:
            raise ArtifactError(f"{folder}: unknown adapter method {method!r}")
    except (RuntimeError, KeyError, ValueError) as e:
        raise ArtifactError(f"{folder}: adapter does not fit this backbone ({str(e).splitlines()[0]})") from None
    return model.eval(), manifest
