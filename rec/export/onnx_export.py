"""The ONNX export entry points, re-exported from the modules that hold them (one concept each).

- :mod:`rec.export.serving_model`: ``export_serving_model``, the shared multi-tenant graph
  (fp32 + base graph, optional int8), verified before publishing.
- :mod:`rec.export.merged_model`: ``export_merged_tenant_model``, one self-contained model per
  tenant (any method, ``full`` included).
- :mod:`rec.export.tracing`: the dynamo exporter (the legacy TorchScript one hard-codes sequence
  lengths, FIELD-NOTES) and reading an exported file back.
- :mod:`rec.export.graph_surgery`: ``slim``, what ONNX Runtime never reads removed.
- :mod:`rec.export.quantization`: int8 dynamic quantization, measured against fp32.

Every export is checked with ``onnx.checker`` and run in ONNX Runtime against the torch module on
random and (when given) real inputs; an fp32 model is refused (nothing is published) unless
max |diff| <= 1e-4 and every row's top-10 is identical (up to swaps of float ties,
``parity.same_topk``). int8 quality (top-10 overlap, NDCG@10 delta on real data) is measured and
recorded, not gated: it is a trade-off for the operator.
"""

from __future__ import annotations

from rec.export.graph_surgery import slim
from rec.export.merged_model import MERGED_KIND, export_merged_tenant_model
from rec.export.parity import PARITY_ATOL, ParityData, compare_users, parity_data_from_tenant
from rec.export.serving_model import export_serving_model

__all__ = [
    "export_serving_model",
    "export_merged_tenant_model",
    "slim",
    "ParityData",
    "parity_data_from_tenant",
    "compare_users",
    "MERGED_KIND",
    "PARITY_ATOL",
]
