"""Storage formats named by configs, the CLI, export and serving: defined once, here at the base
layer, so serving (which must not import ``rec.config`` and its method registry) reads the same
lists as the typed config."""

from __future__ import annotations

__all__ = ["ADAPTER_DTYPES", "CATALOG_DTYPES", "MODEL_VARIANTS"]

#: storage of a tenant's catalog matrix in its bundle (``rec export``, ``rec publish``, the demo)
CATALOG_DTYPES = ("fp32", "fp16", "int8")
#: storage of a bundle's LoRA / prompt tensors once loaded for serving
ADAPTER_DTYPES = ("fp32", "fp16")
#: the shared serving model's weights (int8 = ORT dynamic quantization)
MODEL_VARIANTS = ("fp32", "int8")
