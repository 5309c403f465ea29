"""Item text layouts fed to the text encoder (``TextConfig.item_format``).

The loaders write ``"title | brand: x | categories: a, b"`` (``join_fields``: the title first and
unlabelled, attributes as ``label: value``, empty ones left out). ``kv`` rewrites that as
``"title: t; brand: x; category: a, b"``, the key: value form UniSRec builds from title, category
and brand, so the encoder sees every part named. A text with no attribute (titles-only catalogs)
stays the plain title, so those catalogs' embeddings, and their cache entries, do not change.
The embedding cache is keyed by the sha256 of each final text, so the two layouts never collide.
"""

from __future__ import annotations

import re

__all__ = ["ITEM_FORMATS", "kv_text", "format_item_text", "format_item_texts"]

ITEM_FORMATS = ("joined", "kv")
_SEP = " | "
_LABELLED = re.compile(r"^([a-z][a-z_ ]{0,30}): (.+)$")
#: loader labels -> the key the kv form uses (UniSRec's "category")
_KEYS = {"categories": "category", "genres": "genre"}
_LOADER_LABELS = ("brand", "categories", "description", "released", "genres")


def kv_text(title: str, fields: list[tuple[str, str]]) -> str:
    """``"title: t; key: value; ..."`` from a title and labelled attributes; empty values are left out.

    Falls back to the plain title when no attribute has a value.
    """
    parts = [(_KEYS.get(k, k), v.strip()) for k, v in fields if v and v.strip()]
    if not parts:
        return title.strip()
    head = [f"title: {title.strip()}"] if title.strip() else []
    return "; ".join(head + [f"{k}: {v}" for k, v in parts])


def _split_joined(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Undo ``join_fields``: (title, [(label, value), ...]). A part that is not ``label: value`` is
    part of the title (a title may itself contain " | ")."""
    title_parts, fields = [], []
    for i, part in enumerate(text.split(_SEP)):
        m = _LABELLED.match(part)
        # the first part is the title unless it is a loader label (an item without a title)
        if m and (i > 0 or m.group(1) in _LOADER_LABELS):
            fields.append((m.group(1), m.group(2)))
        else:
            title_parts.append(part)
    return _SEP.join(title_parts), fields


def format_item_text(text: str, item_format: str) -> str:
    """One item's text in ``item_format`` (``joined``: unchanged).

    Raises:
        ValueError: An unknown format.
    """
    if item_format == "joined":
        return text
    if item_format == "kv":
        return kv_text(*_split_joined(text))
    raise ValueError(f"unknown text.item_format {item_format!r}: choose one of {ITEM_FORMATS}")


def format_item_texts(texts: list[str], item_format: str) -> list[str]:
    """:func:`format_item_text` over a catalog."""
    if item_format == "joined":
        return list(texts)
    return [format_item_text(t, item_format) for t in texts]
