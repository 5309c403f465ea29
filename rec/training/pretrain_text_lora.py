"""``train.text_lora`` in ``rec pretrain``: the run's LoRA text tower and what the Ray Train recipe needs of it.

With ``train.text_lora.layers > 0`` the item-text encoder's top layers learn with the backbone
(``rec.training.text_tower``): one shared :class:`~rec.text.lora_tower.LoraTower`, a
:class:`~rec.training.text_tower.TowerText` per source and per held-out tenant standing where the
frozen text matrices stood, the LoRA weights in the optimizer (their own learning rate), in every
checkpoint and in the early-stopping snapshot (:class:`JointWeights`), and the selected epoch's
merged encoder published inside the backbone artifact (``rec.training.checkpoint``), where loading
the backbone points ``text.model`` at it.

Token states (the frozen layers' output, ``rec.text.token_states``) are cached on disk per tenant,
so the workers build them once and the driver's test evaluation and publish read them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rec.config import RecConfig, TextConfig
from rec.text.encoder import TextEncoder
from rec.text.lora_tower import DEFAULT_TARGETS, LoraTower
from rec.training.corpus import Corpus, TenantCorpus
from rec.training.text_tower import TowerText

__all__ = ["TextLoraRun", "JointWeights", "LORA_PREFIX", "text_lora_cut", "build_text_lora", "tower_text", "split_weights"]

#: key prefix of the LoRA tensors inside a run's weights (checkpoints, early stopping): never a backbone key
LORA_PREFIX = "text_lora."


def text_lora_cut(text: TextConfig, layers: int) -> int:
    """The first adapted layer (``num_layers - layers``) of the ``text.model`` encoder.

    Raises:
        ValueError: ``layers`` is not below the encoder's layer count.
    """
    from rec.text import get_encoder

    n = int(get_encoder(text).model.config.num_hidden_layers)
    if not 0 < layers < n:
        raise ValueError(f"train.text_lora.layers={layers}: the text encoder {text.model!r} has {n} layers; "
                         f"set 1..{n - 1} (the layers below stay frozen and are cached once), or 0 for the frozen encoder")
    return n - layers


@dataclass
class TextLoraRun:
    """The tower of a run and each tenant's text through it (sources in corpus order, then held-out tenants)."""

    encoder: TextEncoder  # the frozen encoder the tower's layers were copied from
    tower: LoraTower
    texts: list[TowerText]
    holdout_texts: list[TowerText]

    def param_groups(self, backbone: nn.Module, lr: float, lora_lr: float | None) -> list[dict[str, Any]]:
        """AdamW groups: the backbone at ``lr``, the LoRA weights at ``lora_lr`` (None: ``lr``)."""
        lora = [p for p in self.tower.parameters() if p.requires_grad]
        return [{"params": list(backbone.parameters()), "lr": lr}, {"params": lora, "lr": lora_lr or lr}]


def tower_text(run: TextLoraRun, name: str, texts: list[str], states_root: str | Path) -> TowerText:
    """One catalog's :class:`TowerText` through ``run``'s tower, its token states cached at ``<states_root>/<name>``.

    ``texts`` are laid out as ``encode_items`` lays them out (``text.item_format``). The states' key
    (encoder, cut, texts) is checked on read: a stale folder is rebuilt, never used.
    """
    from rec.text.token_states import token_states

    return TowerText(run.tower, token_states(run.encoder, texts, run.tower.cut, Path(states_root) / name))


def _tenant_text(run: TextLoraRun, tenant: TenantCorpus, states_root: Path) -> TowerText:
    if tenant.item_texts is None:
        raise ValueError(f"tenant {tenant.name!r} carries no item texts: build the corpus with train.text_lora.layers > 0")
    return tower_text(run, tenant.name, tenant.item_texts, states_root)


def build_text_lora(cfg: RecConfig, corpus: Corpus, states_root: str | Path) -> TextLoraRun:
    """The LoRA tower (``rank``, alpha = 2 * rank, BERT-style targets) and every tenant's :class:`TowerText`.

    Seed torch before calling: LoRA's ``A`` is drawn here (``B = 0``, so the tower starts at the
    frozen encoder).

    Args:
        states_root: Token states are kept at ``<states_root>/<tenant name>``.
    """
    from rec.text import get_encoder

    tl = cfg.train.text_lora
    cut = text_lora_cut(cfg.text, tl.layers)
    encoder = get_encoder(cfg.text)
    run = TextLoraRun(encoder, LoraTower(encoder, cut, tl.rank, 2.0 * tl.rank, list(DEFAULT_TARGETS)), [], [])
    root = Path(states_root)
    run.texts = [_tenant_text(run, t, root) for t in corpus.tenants]
    run.holdout_texts = [_tenant_text(run, t, root) for t in corpus.holdout]
    return run


class JointWeights:
    """The backbone and the tower's LoRA as one set of weights, for checkpoints and early stopping.

    ``state_dict()`` is the backbone's plus the LoRA tensors under ``text_lora.<PEFT name>`` (the
    tower's frozen layers are the encoder's own, never saved); ``load_state_dict`` splits them back.
    """

    def __init__(self, backbone: nn.Module, tower: LoraTower) -> None:
        self.backbone, self.tower = backbone, tower

    def state_dict(self) -> dict[str, torch.Tensor]:
        lora = {LORA_PREFIX + k: v.detach() for k, v in self.tower.lora_tensors().items()}
        return {**self.backbone.state_dict(), **lora}

    def load_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        backbone, lora = split_weights(weights)
        self.backbone.load_state_dict(backbone)
        self.tower.load_lora(lora)


def split_weights(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A run's weights as (backbone state dict, LoRA tensors by PEFT name); the second is empty without text_lora."""
    lora = {k[len(LORA_PREFIX):]: v for k, v in weights.items() if k.startswith(LORA_PREFIX)}
    return {k: v for k, v in weights.items() if not k.startswith(LORA_PREFIX)}, lora
