"""Checkpoints: per-epoch training state (for resume) and the exported backbone artifact.

Both are artifact folders (see ``rec.io.artifacts``): files first, ``manifest.json`` last, renamed
into place atomically. Tensors are stored with safetensors (no pickle); optimizer state, which is a
nested dict of tensors, goes through ``torch.save``/``torch.load(weights_only=True)``.

Backbone artifact layout::

    checkpoint/
      model.safetensors     backbone weights (best validation epoch)
      config.yaml           the full RecConfig that trained it
      tenants.json          tenant name -> {id_offset, num_items, data_hash}
      text-encoder/         only after train.text_lora: the tuned item-text encoder, a transformers
                            model folder (kind=text-encoder, rec.text.lora_tower.save_tuned_encoder)
      manifest.json         kind=backbone, checksums, versions, metrics, text encoder fingerprint,
                            "text_encoder": the tuned encoder's folder relative to this one

:func:`load_backbone` points the loaded config's ``text.model`` at ``<folder>/text-encoder`` when
there is one, so every later step (zero-shot, ``rec adapt``, the catalogs an export encodes) uses
the tuned encoder; the artifact itself holds no absolute path, so a moved folder still loads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from rec.config import RecConfig, config_from_dict, dump_config
from rec.io.artifacts import ArtifactError, artifact_writer, read_manifest
from rec.models.backbone import Backbone, build_backbone

__all__ = [
    "save_train_state",
    "load_train_state",
    "export_backbone",
    "load_backbone",
    "LoadedBackbone",
    "TEXT_ENCODER_DIR",
]

#: the tuned item-text encoder's folder inside a backbone artifact (train.text_lora)
TEXT_ENCODER_DIR = "text-encoder"


def _state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_train_state(
    dest: str | Path,
    model: Backbone,
    best_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> Path:
    """Write a resumable training checkpoint folder (current + best weights, optimizer, counters)."""
    with artifact_writer(dest, kind="train-state", meta={"state": state}) as tmp:
        save_file(_state_dict(model), str(tmp / "model.safetensors"))
        save_file(best_state, str(tmp / "best_model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    return Path(dest)


def load_train_state(folder: str | Path) -> tuple[dict, dict, dict, dict[str, Any]]:
    """Return (model state, best model state, optimizer state, counters) from a train-state folder."""
    folder = Path(folder)
    manifest = read_manifest(folder, kind="train-state")
    return (
        load_file(str(folder / "model.safetensors")),
        load_file(str(folder / "best_model.safetensors")),
        torch.load(folder / "optimizer.pt", weights_only=True),
        manifest["state"],
    )


def export_backbone(
    dest: str | Path,
    weights: dict[str, torch.Tensor],
    cfg: RecConfig,
    tenants: dict[str, dict[str, Any]],
    metrics: dict[str, Any],
    text_model: str | None,
    extra: dict[str, Any] | None = None,
    text_encoder: Callable[[Path], Any] | None = None,
) -> Path:
    """Publish a backbone artifact atomically (see module doc).

    Args:
        text_encoder: Writes the tuned text encoder's model folder at the path it is given
            (``<artifact>/text-encoder``); None: the backbone reads ``cfg.text.model`` as it is.
    """
    meta = {
        "metrics": metrics,
        "text_model": text_model,
        "num_item_ids": sum(t["num_items"] for t in tenants.values()),
        "data_hashes": {name: t["data_hash"] for name, t in tenants.items()},
        **({"text_encoder": TEXT_ENCODER_DIR} if text_encoder is not None else {}),
        **(extra or {}),
    }
    with artifact_writer(dest, kind="backbone", meta=meta) as tmp:
        save_file(weights, str(tmp / "model.safetensors"))
        (tmp / "config.yaml").write_text(dump_config(cfg))
        (tmp / "tenants.json").write_text(json.dumps(tenants, indent=2, sort_keys=True))
        if text_encoder is not None:
            text_encoder(tmp / TEXT_ENCODER_DIR)
    return Path(dest)


def _with_tuned_encoder(cfg: RecConfig, folder: Path, manifest: dict[str, Any]) -> RecConfig:
    """``cfg`` with ``text.model`` at the artifact's tuned encoder, when it has one (verified)."""
    rel = manifest.get("text_encoder")
    if not rel:
        return cfg
    if rel != TEXT_ENCODER_DIR:
        raise ArtifactError(f"{folder}: manifest text_encoder={rel!r}, expected {TEXT_ENCODER_DIR!r}: re-publish the backbone")
    read_manifest(folder / rel, kind="text-encoder")
    return cfg.model_copy(update={"text": cfg.text.model_copy(update={"model": str((folder / rel).resolve())})})


class LoadedBackbone:
    """A backbone read back from its artifact: model (eval mode), config, tenants, manifest, checksum."""

    def __init__(self, model: Backbone, cfg: RecConfig, tenants: dict, manifest: dict, checksum: str) -> None:
        self.model, self.cfg, self.tenants, self.manifest, self.checksum = model, cfg, tenants, manifest, checksum


def load_backbone(folder: str | Path) -> LoadedBackbone:
    """Load and verify a backbone artifact.

    A backbone pretrained with ``train.text_lora`` comes with its tuned text encoder: the returned
    config's ``text.model`` is that folder's absolute path here.

    Raises:
        ArtifactError: Missing/corrupt folder, not a backbone, or weights that do not fit the config.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"backbone checkpoint {folder} does not exist: pass the folder `rec pretrain` printed")
    manifest = read_manifest(folder, kind="backbone")
    cfg = _with_tuned_encoder(config_from_dict(yaml.safe_load((folder / "config.yaml").read_text())), folder, manifest)
    tenants = json.loads((folder / "tenants.json").read_text())
    model = build_backbone(cfg.model, num_item_ids=int(manifest["num_item_ids"]))
    try:
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
    except RuntimeError as e:
        raise ArtifactError(f"{folder}: weights do not match its config.yaml ({str(e).splitlines()[0]})") from None
    model.eval()
    return LoadedBackbone(model, cfg, tenants, manifest, manifest["files"]["model.safetensors"]["sha256"])
