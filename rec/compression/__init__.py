"""Compressing the serving encoder: pruning with a short recovery fine-tune, and distillation.

Only the user encoder (the transformer blocks in the shared ONNX graph) is compressed: the text
adaptor, hence every tenant's catalog matrix and bundle, stays exactly the same, so a compressed
serving model is a drop-in replacement for the shared one. int8 quantization lives with the ONNX
export (``rec.export.onnx_export``). Numbers: bench/compression.py.
"""

from rec.compression.distill import DistillLoss, make_student
from rec.compression.pruning import ffn_prune, magnitude_prune, make_permanent, recover, sparsity

__all__ = ["magnitude_prune", "make_permanent", "ffn_prune", "sparsity", "recover", "make_student", "DistillLoss"]
