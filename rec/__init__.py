"""fewshot-rec: a text-based sequential recommendation backbone, pretrained on Ray Train, adapted
to new tenants from a few interactions and served from one ONNX model.

Subpackages: ``rec.data`` (tenants, loaders, splits), ``rec.text`` (item-text encoder),
``rec.models`` (backbone), ``rec.training`` (Ray Train pretraining), ``rec.metrics``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
