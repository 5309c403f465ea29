"""What travels in a federated round: the adapter's trainable tensors, and the check on what comes back.

The backbone is frozen and shared by every client and the server; only the parameters the
adaptation method trains move (``requires_grad``: PEFT's ``lora_A``/``lora_B`` and, with
``lora.train_adaptor``, the adaptor; item-terms' ``item_bias``). They travel under their
``named_parameters`` names, so server and clients built by the same ``prepare_model`` agree.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["AdapterSpec", "adapter_arrays", "adapter_spec", "load_adapter_arrays", "update_problem", "payload_bytes"]

#: name -> shape of every tensor that travels
AdapterSpec = dict[str, tuple[int, ...]]


def adapter_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """The trainable tensors of ``model`` as float32 numpy copies, by parameter name."""
    return {n: p.detach().cpu().float().numpy().copy() for n, p in model.named_parameters() if p.requires_grad}


def adapter_spec(model: nn.Module) -> AdapterSpec:
    return {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}


def load_adapter_arrays(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Copy ``arrays`` into ``model``'s trainable parameters in place.

    Raises:
        ValueError: The arrays are not exactly the model's trainable tensors (see :func:`update_problem`).
    """
    problem = update_problem(arrays, adapter_spec(model))
    if problem:
        raise ValueError(f"adapter arrays do not fit the model: {problem}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in arrays.items():
            params[name].copy_(torch.from_numpy(np.asarray(value)).to(params[name].dtype))


def update_problem(arrays: dict[str, np.ndarray], spec: AdapterSpec) -> str | None:
    """Why a client's update cannot be averaged in, or None when it fits ``spec``.

    Checks, in order: the same tensor names, the same shapes, floating point, every value finite.
    """
    missing, extra = sorted(set(spec) - set(arrays)), sorted(set(arrays) - set(spec))
    if missing or extra:
        return f"tensor names differ from the adapter's: missing {missing[:3]}, unexpected {extra[:3]}"
    for name, shape in spec.items():
        a = np.asarray(arrays[name])
        if tuple(a.shape) != tuple(shape):
            return f"{name} has shape {tuple(a.shape)}, the adapter's is {tuple(shape)}"
        if not np.issubdtype(a.dtype, np.floating):
            return f"{name} has dtype {a.dtype}, expected floating point"
        if not np.isfinite(a).all():
            return f"{name} has {int((~np.isfinite(a)).sum())} non-finite values (NaN/inf)"
    return None


def payload_bytes(arrays: dict[str, np.ndarray]) -> int:
    """Bytes of the tensors themselves (what one client uploads per round, before framing)."""
    return int(sum(math.prod(np.shape(a)) * np.asarray(a).dtype.itemsize for a in arrays.values()))
