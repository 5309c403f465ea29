"""Errors of the export/serving path. All are ``ValueError``s, so the CLI prints them as one line."""

from __future__ import annotations

from rec.io.artifacts import ArtifactError

__all__ = ["ExportError", "AdapterShapeError", "FeedError", "ArtifactError"]


class ExportError(ValueError):
    """An export was refused: failed parity/validation, or a tenant the shared graph cannot serve."""


class AdapterShapeError(ExportError):
    """A tenant's adapter tensors do not fit the serving graph (unknown projection, wrong shape)."""


class FeedError(ValueError):
    """Inputs to a serving model are wrong (missing/unknown names, shapes, dtypes, item rows)."""
