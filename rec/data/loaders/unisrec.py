"""UniSRec / RecBole atomic-file datasets (e.g. the Amazon "Scientific" downstream domain).

Files, for a dataset ``<Name>``: ``<Name>.text`` (``item_id:token, text:token_seq``: ASIN and a
text of title, category path and brand), ``<Name>.item2index`` / ``<Name>.user2index`` (raw id ->
0-based index) and ``<Name>.{train,valid,test}.inter`` (``user_id, item_id_list, item_id``: a
space-separated history of item indices and the next item).

RecBole cuts each history to the last ``MAX_ITEM_LIST_LENGTH`` items (50 in the shipped data), so
``test history + target`` is the whole sequence only for users with at most 51 items. Each user's
sequence is therefore stitched from *all* rows: start at the shortest history and repeatedly
append the target of the row whose history equals the current last ``L`` items. There are no
timestamps (-1).

Reference: Y. Hou et al., "Towards Universal Sequence Representation Learning for Recommender
Systems", KDD 2022.
"""

from __future__ import annotations

from collections import defaultdict, deque
from pathlib import Path

import numpy as np

from rec.data.loaders._common import build_tenant, clean_text, read_delimited, require_files, resolve_stem
from rec.data.schema import DataError, Tenant

__all__ = ["load_unisrec"]

_INTER_COLS = ["user_id:token", "item_id_list:token_seq", "item_id:token"]


def _read_index(path: Path) -> dict[int, str]:
    df = read_delimited(path, "\t", ["raw", "index"], int_cols=["index"])
    return dict(zip(df["index"].tolist(), df["raw"].tolist()))


def _read_inter(path: Path) -> list[tuple[int, tuple[int, ...], int]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    if header != _INTER_COLS:
        raise DataError(f"{path}, line 1: header {header} is not the RecBole sequence header {_INTER_COLS}")
    df = read_delimited(path, "\t", ["user", "history", "item"], header=True, int_cols=["user", "item"])
    rows = []
    for n, (u, hist, item) in enumerate(zip(df["user"].tolist(), df["history"].tolist(), df["item"].tolist())):
        try:
            rows.append((u, tuple(int(x) for x in hist.split()), item))
        except ValueError:
            raise DataError(f"{path}, line {n + 2}: item_id_list {hist[:60]!r} is not space-separated integers") from None
    return rows


def _stitch(rows: list[tuple[tuple[int, ...], int]], window: int) -> tuple[list[int], int]:
    """Rebuild one user's sequence from (history, target) rows; returns (sequence, rows used)."""
    follows: dict[tuple[int, ...], deque[int]] = defaultdict(deque)
    for hist, target in rows:
        follows[hist].append(target)
    seq = list(min(rows, key=lambda r: len(r[0]))[0])
    used = 0
    while (nxt := follows.get(tuple(seq[-window:]))):
        seq.append(nxt.popleft())
        used += 1
    return seq, used


def load_unisrec(folder: Path, name: str, subset: str | None = None) -> Tenant:
    """Load ``<folder>/<subset>.*`` (``subset`` defaults to the only ``*.item2index`` stem).

    Raises:
        DataError: Missing files, malformed lines, ids missing from the index files, or rows that
            do not chain into one sequence per user.
    """
    fmt = "unisrec"
    stem = resolve_stem(folder, ".item2index", subset, fmt)
    names = [f"{stem}.{s}" for s in ("text", "item2index", "user2index", "train.inter", "valid.inter", "test.inter")]
    files = require_files(folder, names, fmt)
    item_of = _read_index(files[f"{stem}.item2index"])
    user_of = _read_index(files[f"{stem}.user2index"])
    text_path = files[f"{stem}.text"]
    text_df = read_delimited(text_path, "\t", ["item", "text"], header=True)
    text_of = dict(zip(text_df["item"], (clean_text(t) for t in text_df["text"])))
    catalog = [item_of[i] for i in sorted(item_of)]
    by_user: dict[int, list[tuple[tuple[int, ...], int]]] = defaultdict(list)
    window = 1
    for part in ("train", "valid", "test"):
        for u, hist, item in _read_inter(files[f"{stem}.{part}.inter"]):
            by_user[u].append((hist, item))
            window = max(window, len(hist))
    users, items = [], []
    for u in sorted(by_user):
        seq, used = _stitch(by_user[u], window)
        if used != len(by_user[u]):
            raise DataError(
                f"{folder}/{stem}.*.inter: the {len(by_user[u])} rows of user index {u} do not chain into one "
                f"sequence ({used} used); expected every history to be a prefix (last {window} items) of the next"
            )
        users.extend([u] * len(seq))
        items.extend(seq)
    missing_u = set(by_user) - set(user_of)
    missing_i = set(items) - set(item_of)
    if missing_u or missing_i:
        raise DataError(
            f"{folder}/{stem}.*.inter: {len(missing_u)} user and {len(missing_i)} item indices are not in "
            f"{stem}.user2index / {stem}.item2index (e.g. {sorted(missing_u or missing_i)[:3]})"
        )
    raw_users = np.asarray([user_of[u] for u in users], dtype=object)
    raw_items = [item_of[i] for i in items]
    texts = [text_of.get(a, "") for a in catalog]
    return build_tenant(
        name, f"{fmt}:{folder / stem}", raw_users, raw_items, None, catalog, texts, where=str(folder / stem)
    )
