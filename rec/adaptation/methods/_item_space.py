"""What the catalog-side methods (item-terms, text-lora) save besides their own tensors: the
item-text adaptor and the cosine-score temperature, both of which shape the tenant's item space."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["item_space_tensors", "load_item_space"]


def item_space_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """``adaptor.*`` (when the backbone has one) and ``logit_scale`` (when it scores by cosine)."""
    out = {}
    if model.adaptor is not None:  # small, and exact whether or not it trained
        out.update({f"adaptor.{k}": v for k, v in model.adaptor.state_dict().items()})
    if model.logit_scale is not None:
        out["logit_scale"] = model.logit_scale.reshape(1)
    return out


def load_item_space(tensors: dict[str, torch.Tensor], model: nn.Module, folder: Path) -> None:
    """Load what :func:`item_space_tensors` saved into ``model`` (in place).

    Raises:
        ValueError: The adapter learned a cosine temperature and the backbone scores by dot product.
    """
    import torch

    adaptor = {k.removeprefix("adaptor."): v for k, v in tensors.items() if k.startswith("adaptor.")}
    if adaptor:
        model.adaptor.load_state_dict(adaptor)
    if "logit_scale" in tensors:
        if model.logit_scale is None:
            raise ValueError(f"{folder}: the adapter learned a cosine-score temperature, the backbone scores by dot product")
        with torch.no_grad():
            model.logit_scale.copy_(tensors["logit_scale"][0])
