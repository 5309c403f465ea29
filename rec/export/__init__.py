"""Export for serving: one shared ONNX graph with per-row tenant adapters, tenant bundles, runtime.

- :mod:`rec.export.serving_graph`: the torch modules that are exported.
- :mod:`rec.export.serving_model`: ``export_serving_model`` (shared graph + base graph, optional int8).
- :mod:`rec.export.merged_model`: ``export_merged_tenant_model`` (the classic one-model-per-tenant alternative).
- :mod:`rec.export.tracing`, :mod:`rec.export.graph_surgery`, :mod:`rec.export.quantization`: the
  dynamo exporter, ``slim``, int8 dynamic quantization (``rec.export.onnx_export`` re-exports the
  entry points).
- :mod:`rec.export.tenant_bundle`: per-tenant catalog matrix + adapter tensors + item ids.
- :mod:`rec.export.runtime`: ``SharedRanker``, the ONNX Runtime side used by the server.
- :mod:`rec.export.parity`: the ORT-vs-torch checks run at export (and their numbers).
- :mod:`rec.export.errors`: ``ExportError``, ``AdapterShapeError``, ``FeedError``.

See docs/export.md.
"""
