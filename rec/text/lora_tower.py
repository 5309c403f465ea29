"""The top layers of the item-text encoder with PEFT LoRA on their projections: what ``text-lora`` trains.

A private copy of the encoder's layers ``cut..L-1`` (the shared, loaded encoder is never touched)
gets LoRA (Hu et al., ICLR 2022) on the named ``nn.Linear`` modules through
``peft.inject_adapter_in_model``; everything else in it is frozen. It maps the cached token states
entering layer ``cut`` (``rec.text.token_states``) to item vectors exactly as the frozen encoder
does: the layers, mean pooling over the attention mask, L2 normalisation. With LoRA's ``B = 0``
start its output equals the frozen encoder's (tested), so training starts at the text prior.

Works for Hugging Face encoders whose layers sit in ``model.encoder.layer`` and take
``(hidden, additive_mask)`` (BERT, RoBERTa, XLM-R, ELECTRA, MiniLM); others are refused with the
reason. Dropout inside the copied layers stays off (the frozen encoder runs in eval mode).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rec.text.encoder import TextEncoder, encoder_device
from rec.text.token_states import TokenStates

__all__ = ["LoraTower", "DEFAULT_TARGETS", "encoder_layers", "preserve_term", "tuned_encoder", "save_tuned_encoder"]

#: BERT-family module names: q/k/v of self-attention and every dense (attention out, FFN in/out)
DEFAULT_TARGETS = ("query", "key", "value", "dense")
#: weights key prefix in adapter files: the names PEFT gives the same LoRA on the whole HF encoder
KEY_PREFIX = "text_encoder.encoder.layer."


def encoder_layers(encoder: TextEncoder) -> nn.ModuleList:
    """The encoder's transformer layers. Raises ValueError for an architecture without ``encoder.layer``."""
    layers = getattr(getattr(encoder.model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"text model {encoder.model_id!r} ({type(encoder.model).__name__}) has no encoder.layer list: "
                         "text-lora supports BERT-style encoders (MiniLM, BERT, RoBERTa, XLM-R, ELECTRA)")
    return layers


class LoraTower(nn.Module):
    """Layers ``cut..L-1`` of ``encoder`` with LoRA; ``forward(states, mask) -> (A, H)`` unit vectors.

    Args:
        encoder: The loaded text encoder (its layers are copied, not shared).
        cut: First adapted layer (``num_layers - layers``).
        rank, alpha: LoRA rank and scaling numerator.
        target_modules: ``nn.Linear`` names inside a layer that get LoRA.
    """

    def __init__(self, encoder: TextEncoder, cut: int, rank: int, alpha: float, target_modules: list[str]) -> None:
        import peft

        super().__init__()
        layers = encoder_layers(encoder)
        self.cut = cut
        self.device = encoder_device(encoder.cfg.device)
        self.layers = copy.deepcopy(layers[cut:]).to(self.device)
        for p in self.layers.parameters():
            p.requires_grad_(False)
        cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(target_modules))
        try:
            peft.inject_adapter_in_model(cfg, self.layers)
        except ValueError as e:
            raise ValueError(f"text_lora.target_modules {list(target_modules)}: {str(e).splitlines()[0]} "
                             f"(BERT-style names: {list(DEFAULT_TARGETS)})") from None
        super().train(False)

    def train(self, mode: bool = True) -> LoraTower:
        """Always eval: the frozen layers' dropout stays off (LoRA has none); gradients still flow."""
        return super().train(False)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``states (A, T, H)`` at the cut, ``mask (A, T)`` 1 at tokens -> ``(A, H)`` unit item vectors."""
        states, mask = states.to(self.device), mask.to(self.device)
        x = states
        additive = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # (A, 1, 1, T)
        for layer in self.layers:
            x = layer(x, additive)
            x = x[0] if isinstance(x, tuple) else x
        m = mask[..., None].to(x.dtype)  # (A, T, 1)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1).cpu()

    @torch.no_grad()
    def encode_all(self, cache: TokenStates, batch_size: int = 256) -> torch.Tensor:
        """Re-encode the whole catalog ``(N, H)``, in batches of similar length (little padding)."""
        out = torch.empty_like(cache.frozen)
        order = torch.argsort(cache.lengths, descending=True, stable=True)
        for s in range(0, cache.num_items, batch_size):
            idx = order[s : s + batch_size]
            out[idx] = self(*cache.batch(idx))
        return out

    def lora_tensors(self) -> dict[str, torch.Tensor]:
        """The LoRA weights under the names PEFT gives them on the whole encoder (``text_encoder.encoder.layer.<i>...``)."""
        out = {}
        for name, p in self.layers.named_parameters():
            if "lora_" in name:
                i, rest = name.split(".", 1)
                out[f"{KEY_PREFIX}{self.cut + int(i)}.{rest.replace('.default', '')}"] = p
        return out

    def load_lora(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy saved LoRA weights (:meth:`lora_tensors` names) in. Raises KeyError/RuntimeError if they do not fit."""
        live = self.lora_tensors()
        missing = sorted(set(live) - set(tensors))
        if missing:
            raise KeyError(f"text-lora weights missing {missing[:3]} (adapted with other text_lora.layers/target_modules?)")
        with torch.no_grad():
            for k, p in live.items():
                p.copy_(tensors[k])


def preserve_term(new: torch.Tensor, frozen: torch.Tensor, weight: float) -> torch.Tensor:
    """The text-preserving term ``weight * mean(1 - cos(new, frozen))`` over unit rows ``(A, H)``.

    Keeps re-encoded item vectors near the frozen encoder's, so the title prior stays reachable.
    """
    return weight * (1.0 - (new * frozen).sum(-1)).mean()


def tuned_encoder(encoder: TextEncoder, tower: LoraTower) -> nn.Module:
    """A copy of the whole Hugging Face encoder with the tower's LoRA merged into its layers.

    ``W + B A * scale`` replaces each adapted projection's weight (PEFT's ``get_delta_weight``), so
    the copy encodes every text exactly as the tower does on its cached states, with no PEFT at
    run time and the original encoder untouched.
    """
    from peft.tuners.lora import LoraLayer

    model = copy.deepcopy(encoder.model).cpu()
    layers = model.encoder.layer
    with torch.no_grad():
        for name, module in tower.layers.named_modules():
            if isinstance(module, LoraLayer):
                i, rest = name.split(".", 1)
                target = layers[tower.cut + int(i)].get_submodule(rest)
                target.weight += module.get_delta_weight("default").to(target.weight)
    return model


def save_tuned_encoder(encoder: TextEncoder, tower: LoraTower, dest: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write the merged encoder (:func:`tuned_encoder`) and its tokenizer as a model folder at ``dest``.

    The folder is a plain ``transformers`` model: ``text.model=<dest>`` makes every later step
    (zero-shot, adaptation, the catalog a publish encodes) use the tuned text vectors. Written
    atomically with a checksummed manifest (``kind="text-encoder"``) that names the base model.
    """
    from rec.io.artifacts import artifact_writer

    record = {"base_model": encoder.model_id, "base_fingerprint": encoder.model_fingerprint, "lora_cut": tower.cut, **(meta or {})}
    with artifact_writer(dest, "text-encoder", record) as tmp:
        tuned_encoder(encoder, tower).save_pretrained(str(tmp), safe_serialization=True)
        encoder.tokenizer.save_pretrained(str(tmp))
    return Path(dest)
