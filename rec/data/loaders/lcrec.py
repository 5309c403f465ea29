"""LC-Rec / LETTER json datasets (e.g. Amazon 2014 Office Products 5-core).

``<Name>.inter.json`` is ``{"<user index>": [item index, ...]}`` in time order (the LC-Rec loader
holds out the last item as the test target); ``<Name>.item.json`` is ``{"<item index>": {"title",
"description", "brand", "categories"}}``. There are no timestamps (-1).

Item text: ``"title | brand: x | categories: a, b | description: <first 200 characters>"``; the
description is cut because it can run to 40,000 characters and the text encoder reads ~64 tokens.
HTML entities (``AT&amp;T``) are decoded.

Reference: B. Zheng et al., "Adapting Large Language Models by Integrating Collaborative Semantics
for Recommendation" (LC-Rec), ICDE 2024.
"""

from __future__ import annotations

import json
from pathlib import Path

from rec.data.loaders._common import build_tenant, join_fields, read_text, require_files, resolve_stem, truncate
from rec.data.schema import DataError, Tenant

__all__ = ["load_lcrec", "DESCRIPTION_CHARS"]

DESCRIPTION_CHARS = 200


def _read_json_object(path: Path) -> dict:
    try:
        obj = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}, line {e.lineno}: invalid JSON ({e.msg}); expected one JSON object") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: top level is a {type(obj).__name__}; expected a JSON object keyed by index")
    return obj


def _sorted_keys(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda k: (0, int(k), "") if k.isdigit() else (1, 0, k))


def load_lcrec(folder: Path, name: str, subset: str | None = None) -> Tenant:
    """Load ``<folder>/<subset>.inter.json`` + ``.item.json`` (``subset`` defaults to the only one).

    Raises:
        DataError: Missing files, invalid JSON, a sequence that is not a list, or items without a row.
    """
    fmt = "lcrec"
    stem = resolve_stem(folder, ".inter.json", subset, fmt)
    files = require_files(folder, [f"{stem}.inter.json", f"{stem}.item.json"], fmt)
    inter_path, item_path = files[f"{stem}.inter.json"], files[f"{stem}.item.json"]
    inter = _read_json_object(inter_path)
    meta = _read_json_object(item_path)
    ids, texts = [], []
    for key in _sorted_keys(list(meta)):
        m = meta[key] if isinstance(meta[key], dict) else {"title": meta[key]}
        desc = join_fields(m.get("description", ""), unescape=True)
        texts.append(
            join_fields(
                m.get("title", ""),
                [("brand", m.get("brand", "")), ("categories", m.get("categories", "")),
                 ("description", truncate(desc, DESCRIPTION_CHARS))],
                unescape=True,
            )
        )
        ids.append(key)
    users, items = [], []
    for user in _sorted_keys(list(inter)):
        seq = inter[user]
        if not isinstance(seq, list):
            raise DataError(f"{inter_path}: user {user!r} maps to a {type(seq).__name__}; expected a list of item indices")
        users.extend([user] * len(seq))
        items.extend(str(i) for i in seq)
    return build_tenant(name, f"{fmt}:{folder / stem}", users, items, None, ids, texts, where=str(inter_path))
