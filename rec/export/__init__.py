"""Export for serving: one shared ONNX graph with per-row tenant adapters, tenant bundles, runtime.

- :mod:`rec.export.serving_graph`: the torch modules that are exported.
- :mod:`rec.export.onnx_export`: ``export_serving_model`` (shared graph, optional int8) and
  ``export_merged_tenant_model`` (the classic one-model-per-tenant alternative).
- :mod:`rec.export.tenant_bundle`: per-tenant catalog matrix + adapter tensors + item ids.
- :mod:`rec.export.runtime`: ``SharedRanker``, the ONNX Runtime side used by the server.
- :mod:`rec.export.parity`: the ORT-vs-torch checks run at export (and their numbers).
- :mod:`rec.export.errors`: ``ExportError``, ``AdapterShapeError``, ``FeedError``.

See docs/export.md.
"""
