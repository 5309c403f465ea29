"""Compressing the serving encoder: pruning with a short recovery fine-tune, and distillation.

Only the user encoder (the transformer blocks in the shared ONNX graph) is compressed: the text
adaptor, hence every tenant's catalog matrix and bundle, stays exactly the same, so a compressed
serving model is a drop-in replacement for the shared one. int8 quantization lives with the ONNX
export (``rec.export.onnx_export``). ``compress_backbone`` is the recipe (every variant, ready to export);
numbers: bench/compression.py.
"""

from rec.compression.distill import DistillLoss, make_student
from rec.compression.pruning import ffn_prune, magnitude_prune, make_permanent, recover, sparsity
from rec.compression.recipe import CompressionRecipe, compress_backbone, compressed_backbone

__all__ = [
    "CompressionRecipe",
    "DistillLoss",
    "compress_backbone",
    "compressed_backbone",
    "ffn_prune",
    "magnitude_prune",
    "make_permanent",
    "make_student",
    "recover",
    "sparsity",
]
