"""Errors of the export path. All are ``ValueError``s, so the CLI prints them as one line.

``AdapterShapeError`` and ``FeedError`` belong to the serving runtime (``rec.serving.errors``), which
export uses to check parity; they are re-exported here for export code that raises them.
"""

from __future__ import annotations

from rec.io.artifacts import ArtifactError
from rec.serving.errors import AdapterShapeError, FeedError

__all__ = ["ExportError", "AdapterShapeError", "FeedError", "ArtifactError"]


class ExportError(ValueError):
    """An export was refused: failed parity/validation, or a tenant the shared graph cannot serve."""
