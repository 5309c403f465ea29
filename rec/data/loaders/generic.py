"""Bring-your-own data: a CSV/TSV/Parquet interaction file plus an optional item table.

Interactions: one row per interaction with a user column, an item column and (optionally) a time
column. Rows are sorted by time within each user with a stable sort (equal times keep file order);
without a time column the file order is the sequence order and timestamps are -1.

Items (optional): a CSV/Parquet table with the item id column (``item_id``, or the interaction
file's ``item_col`` name) and the ``text_cols``. Item text is the first text column followed by
``"<column>: <value>"`` for the others, joined by ``" | "`` (``"Heat | genre: crime"``). Items
that occur in interactions but not in the table get empty text; items only in the table are kept
(they can still be recommended).

Text files are read as UTF-8, falling back to Latin-1. The full spec is in ``docs/data-formats.md``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from rec.data.loaders._common import build_tenant, join_fields, read_text
from rec.data.schema import DataError, Tenant

__all__ = ["load_generic", "read_table"]

_PARQUET = (".parquet", ".pq")
_TEXT = (".csv", ".tsv", ".tab", ".txt", ".dat")
_SEPS = ("\t", ",", ";", "|")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return Path(name[:-3]).suffix if name.endswith(".gz") else path.suffix.lower()


def read_table(path: Path, what: str, id_cols: Sequence[str] | None = None) -> tuple[pd.DataFrame, bool]:
    """Read a CSV/TSV (optionally .gz) or Parquet file; returns (frame, is_text_file).

    In CSV files the ``id_cols`` (all columns when None) are read as text, so ids such as ``007``
    stay exact; other columns get pandas' type inference (fast for numeric times). The separator is taken from the extension
    (``.tsv`` = tab) or, failing that, the most frequent of tab , ; | in the header line.

    Raises:
        DataError: Missing file, unknown extension or unparsable content (file and line named).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"generic: {what} file {path} not found; expected a .csv, .tsv or .parquet file")
    suffix = _suffix(path)
    if suffix in _PARQUET:
        try:
            return pd.read_parquet(path), False
        except Exception as e:  # pyarrow raises several unrelated types for a bad file
            raise DataError(f"generic: {path} is not a readable Parquet file ({type(e).__name__}: {e})") from None
    if suffix not in _TEXT:
        raise DataError(
            f"generic: {what} file {path} has extension {suffix!r}; "
            f"expected one of {', '.join(_TEXT + _PARQUET)} (text files optionally .gz)"
        )
    text = read_text(path)
    header = text.split("\n", 1)[0]
    sep = "\t" if suffix in (".tsv", ".tab") else max(_SEPS, key=header.count)
    if header.count(sep) == 0:
        sep = ","
    try:
        dtype = str if id_cols is None else dict.fromkeys(id_cols, object)  # absent names are ignored
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=dtype, keep_default_na=False, na_values=[""], index_col=False)
    except pd.errors.ParserError as e:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        msg = f"line {m.group(2)}: {m.group(3)} fields, expected {m.group(1)}" if m else str(e)
        raise DataError(f"generic: {path}: {msg} (separator {sep!r})") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"generic: {path} is empty; expected a header line, then one row per line") from None
    return df, True


def _where(path: Path, row: int, is_text: bool) -> str:
    return f"{path}, line {row + 2}" if is_text else f"{path}, row {row}"  # +2: header, 1-based


def _require_cols(df: pd.DataFrame, cols: Sequence[str], path: Path, option: str) -> None:
    for col in cols:
        if col not in df.columns:
            raise DataError(
                f"generic: {path} has no column {col!r} (set by {option}); columns found: {', '.join(map(str, df.columns))}"
            )


def _as_str(col: pd.Series, path: Path, is_text: bool, name: str) -> np.ndarray:
    """Ids as stripped strings (``(I,)`` object array); integer-valued floats lose their '.0'."""
    if pd.api.types.is_float_dtype(col.dtype) and (col.dropna() == np.floor(col.dropna())).all():
        col = col.astype("Int64")  # a Parquet int column with gaps arrives as float
    # convert the distinct ids only: much faster than per-row string work on 1M rows
    codes, uniq = pd.factorize(col)
    clean = np.asarray([str(u).strip() for u in uniq] + [""], dtype=object)  # [-1] = missing cell
    values = clean[codes]
    empty = values == ""
    if empty.any():
        where = _where(path, int(np.argmax(empty)), is_text)
        raise DataError(f"generic: {where}: empty {name!r}; every row needs a value in this column")
    return values


def _to_unix_seconds(col: pd.Series, path: Path, is_text: bool, name: str) -> np.ndarray:
    """Integers/floats (unix seconds) or date-time strings -> int64 unix seconds."""
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        naive = col.dt.tz_convert("UTC").dt.tz_localize(None) if getattr(col.dt, "tz", None) is not None else col
        vals = (naive - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
        empty = col.isna().to_numpy()
    elif pd.api.types.is_numeric_dtype(col.dtype):
        vals = col.astype("float64")
        empty = col.isna().to_numpy()
    else:
        raw = col.astype(str).str.strip()
        empty = (raw == "").to_numpy()
        try:
            vals = raw.astype("float64")  # fast path: every cell is a number
        except (ValueError, TypeError):
            vals = pd.to_numeric(raw, errors="coerce")
            if vals.isna().any():
                dates = pd.to_datetime(raw.where(vals.isna()), errors="coerce", utc=True, format="mixed")
                vals = vals.fillna((dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1))
    if empty.any():
        raise DataError(
            f"generic: {_where(path, int(np.argmax(empty)), is_text)}: empty {name!r} ({int(empty.sum())} rows in all); "
            "fill every time or set time_col: null to keep the file's row order"
        )
    bad = vals.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"generic: {_where(path, i, is_text)}: {name}={col.iloc[i]!r} is neither unix seconds nor a date-time"
        )
    return np.floor(vals.to_numpy(dtype=np.float64)).astype(np.int64)


def load_generic(
    path: Path,
    name: str,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    time_col_required: bool = True,
    items_path: Path | None = None,
    text_cols: Sequence[str] = ("title",),
) -> Tenant:
    """Load a generic interaction file (and item table).

    Args:
        path: Interactions file (.csv/.tsv/.txt, optionally .gz, or .parquet).
        name: Tenant id.
        user_col: User id column.
        item_col: Item id column.
        time_col: Time column (unix seconds or date-time strings); None = file order.
        time_col_required: If False, a missing ``time_col`` column means "no times" instead of an
            error (used when the column name is only the config default).
        items_path: Optional item table with ``item_id`` (or ``item_col``) and ``text_cols``.
        text_cols: Item-table columns that make the item text, in order.

    Raises:
        DataError: Missing files/columns (naming the column and listing those found), empty ids
            or times, or unparsable times (file and line named).
    """
    path = Path(path)
    df, is_text = read_table(path, "interactions", [user_col, item_col])
    has_time = time_col is not None and (time_col in df.columns or time_col_required)
    _require_cols(df, [user_col, item_col], path, "user_col/item_col")
    if has_time:
        _require_cols(df, [time_col], path, "time_col (set time_col: null if the file has no times)")
    if df.empty:
        raise DataError(f"generic: {path} has a header but no rows")
    users = _as_str(df[user_col], path, is_text, user_col)
    items = _as_str(df[item_col], path, is_text, item_col)
    times = None
    if has_time:
        times = _to_unix_seconds(df[time_col], path, is_text, time_col)
        order = np.argsort(times, kind="stable")  # build_tenant then groups users stably
        users, items, times = users[order], items[order], times[order]
    cat_ids: np.ndarray = np.zeros(0, dtype=object)
    cat_text: list[str] = []
    if items_path is not None:
        ipath = Path(items_path)
        idf, i_text = read_table(ipath, "items")
        key = item_col if item_col in idf.columns else "item_id"
        _require_cols(idf, [key], ipath, "the item id column: item_id or item_col")
        _require_cols(idf, list(text_cols), ipath, "text_cols")
        cat_ids = _as_str(idf[key], ipath, i_text, key)
        cols = [idf[c].tolist() for c in text_cols]
        labels = list(text_cols[1:])
        cat_text = [join_fields(v[0], zip(labels, v[1:])) for v in zip(*cols)] if cols else [""] * len(idf)
        dup = pd.Index(cat_ids).duplicated()
        if dup.any():
            i = int(np.argmax(dup))
            raise DataError(f"generic: {_where(ipath, i, i_text)}: item id {cat_ids[i]!r} appears twice in the item table")
    return build_tenant(
        name, f"generic:{path}", users, items, times, cat_ids, cat_text, unknown_items="append", where=str(path)
    )
