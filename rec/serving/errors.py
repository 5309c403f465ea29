"""Errors of the serving runtime. Both are ``ValueError``s, so the CLI prints them as one line."""

from __future__ import annotations

__all__ = ["AdapterShapeError", "FeedError"]


class AdapterShapeError(ValueError):
    """A tenant's adapter tensors do not fit the serving graph (unknown projection, wrong shape)."""


class FeedError(ValueError):
    """Inputs to a serving model are wrong (missing/unknown names, shapes, dtypes, item rows)."""
