"""SeqRec Benchmark processed releases (``Tiny-Snow/SeqRecBenchmark-Datasets``), pickle-free copies.

Reads ``interactions.tsv.gz`` (``user_id, item_id, timestamp``; each user's rows already in time
order) and ``items.jsonl.gz`` (``{"item_id", "title"}``). Titles keep the source's HTML entities
(``&amp;``), so they are unescaped here. ``proc.zip`` (pickles) is never read.
"""

from __future__ import annotations

import json
from pathlib import Path

from rec.data.loaders._common import build_tenant, clean_text, read_delimited, read_text, require_files
from rec.data.schema import DataError, Tenant

__all__ = ["load_seqrec", "read_jsonl_titles"]

_INTER = "interactions.tsv.gz"
_ITEMS = "items.jsonl.gz"


def read_jsonl_titles(path: Path) -> tuple[list[str], list[str]]:
    """``{"item_id": ..., "title": ...}`` per line -> (item ids, unescaped titles).

    Raises:
        DataError: A line that is not a JSON object with ``item_id`` (line named).
    """
    ids, titles = [], []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            ids.append(str(obj["item_id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path}, line {n}: expected a JSON object with item_id and title, got {line[:80]!r}") from None
        titles.append(clean_text(obj.get("title", ""), unescape=True))
    return ids, titles


def load_seqrec(folder: Path, name: str) -> Tenant:
    """One SeqRec Benchmark dataset folder (e.g. ``seqrec-benchmark/amazon2014-beauty``).

    Raises:
        DataError: Missing files, malformed lines, or interactions on items without a title row.
    """
    fmt = "seqrec"
    files = require_files(folder, [_INTER, _ITEMS], fmt)
    inter = read_delimited(
        files[_INTER], "\t", ["user", "item", "time"], header=True, int_cols=["user", "item"], optional_int_cols=["time"]
    )
    ids, titles = read_jsonl_titles(files[_ITEMS])
    return build_tenant(
        name, f"{fmt}:{folder}", inter["user"], inter["item"], inter["time"], ids, titles, where=str(files[_INTER])
    )
