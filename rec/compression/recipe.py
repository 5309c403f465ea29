"""The compression recipe: a pretrained backbone -> its pruned and distilled encoder variants.

Each variant is returned as a :class:`~rec.training.checkpoint.LoadedBackbone` that export
(``rec.export.onnx_export.export_serving_model``) takes like a published one. Its ``checksum`` is
the sha256 of its own weights serialised as safetensors, and its manifest records what it was
compressed from and how, so an exported compressed model never carries its teacher's identity.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from safetensors.torch import save as save_safetensors

from rec.compression.distill import DistillLoss, make_student
from rec.compression.pruning import ffn_prune, magnitude_prune, make_permanent, recover, sparsity
from rec.models.backbone import Backbone
from rec.training.checkpoint import LoadedBackbone
from rec.training.corpus import Corpus

__all__ = ["CompressionRecipe", "compress_backbone", "compressed_backbone"]


@dataclass(frozen=True)
class CompressionRecipe:
    """What :func:`compress_backbone` builds. Defaults: the recorded bench/compression.py run."""

    magnitude_amount: float = 0.5  # global L1 unstructured pruning of the encoder's Linear weights
    ffn_keep: float = 0.5  # FFN hidden units kept (structured)
    recovery_epochs: int = 3
    student_keep: list[int] = field(default_factory=lambda: [0])  # teacher blocks the student keeps
    student_epochs: int = 12
    student_alpha: float = 0.5  # weight of CE; 1 - alpha on tau^2 * KL(teacher || student)
    student_lr: float = 5e-4
    student_tau: float = 2.0
    student_dropout: float = 0.0  # see make_student: dropout hurt a 1-block student on small tenants


def compressed_backbone(teacher: LoadedBackbone, model: Backbone, how: str) -> LoadedBackbone:
    """Wrap an in-memory compressed encoder as a backbone export can take.

    Args:
        teacher: The backbone it was compressed from (config, tenants, text model are shared: the
            adaptor is frozen, so every tenant's catalog is unchanged).
        model: The compressed backbone.
        how: A short description recorded in the manifest (``compression``).
    """
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    checksum = hashlib.sha256(save_safetensors(weights)).hexdigest()
    manifest = {**teacher.manifest, "compressed_from": teacher.checksum, "compression": how}
    return LoadedBackbone(model.eval(), teacher.cfg, teacher.tenants, manifest, checksum)


def compress_backbone(teacher: LoadedBackbone, corpus: Corpus, recipe: CompressionRecipe) -> dict[str, LoadedBackbone]:
    """Build the recipe's variants, each recovered (or distilled) on ``corpus``.

    Returns:
        ``{"magnitude-50": ..., "ffn-50": ..., "distill-1L": ...}`` (names follow the recipe's
        amounts and kept blocks).
    """
    model = teacher.model
    mag = magnitude_prune(model, recipe.magnitude_amount)
    recover(mag, corpus, epochs=recipe.recovery_epochs)
    make_permanent(mag)
    ffn = ffn_prune(model, recipe.ffn_keep)
    recover(ffn, corpus, epochs=recipe.recovery_epochs)
    student = make_student(model, recipe.student_keep, dropout=recipe.student_dropout)
    recover(student, corpus, loss_model=DistillLoss(student, model, alpha=recipe.student_alpha, tau=recipe.student_tau),
            epochs=recipe.student_epochs, lr=recipe.student_lr)
    mag_name = f"magnitude-{round(100 * recipe.magnitude_amount)}"
    ffn_name = f"ffn-{round(100 * (1 - recipe.ffn_keep))}"
    student_name = f"distill-{len(recipe.student_keep)}L"
    return {
        mag_name: compressed_backbone(teacher, mag, f"{mag_name}: sparsity {sparsity(mag):.2f}, "
                                      f"{recipe.recovery_epochs} recovery epochs"),
        ffn_name: compressed_backbone(teacher, ffn, f"{ffn_name}: FFN units kept {recipe.ffn_keep}, "
                                      f"{recipe.recovery_epochs} recovery epochs"),
        student_name: compressed_backbone(teacher, student, f"{student_name}: blocks {recipe.student_keep} distilled "
                                          f"{recipe.student_epochs} epochs"),
    }
