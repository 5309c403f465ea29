"""Export for serving: one shared ONNX graph with per-row tenant adapters, tenant bundles, publishing.

- :mod:`rec.export.serving_graph`: the torch modules that are exported.
- :mod:`rec.export.serving_model`: ``export_serving_model`` (shared graph + base graph, optional int8).
- :mod:`rec.export.merged_model`: ``export_merged_tenant_model`` (the classic one-model-per-tenant alternative).
- :mod:`rec.export.tracing`, :mod:`rec.export.graph_surgery`, :mod:`rec.export.quantization`: the
  dynamo exporter, ``slim``, int8 dynamic quantization (``rec.export.onnx_export`` re-exports the
  entry points).
- :mod:`rec.export.tenant_bundle`: ``export_tenant_bundle``, per-tenant catalog matrix + adapter
  tensors + item ids (the bundle type and its loader are ``rec.serving.bundles``).
- :mod:`rec.export.publish`: ``publish_tenant`` / ``rollback_tenant`` into a serving artifact root
  (``rec publish`` / ``rec rollback``).
- :mod:`rec.export.parity`: the ORT-vs-torch checks run at export (and their numbers).
- :mod:`rec.export.errors`: ``ExportError`` (and the serving runtime's ``AdapterShapeError``,
  ``FeedError``).

The ONNX Runtime side that serves the exports (``SharedRanker``, ``build_feed``, ``make_session``)
is ``rec.serving``: export uses it to check parity; serving never imports export. See docs/export.md.
"""
