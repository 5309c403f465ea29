"""Helpers shared by every loader: file checks, decoding, delimited parsing, text, Tenant building.

Each loader reads its files into one long table of ``(user, item, time)`` rows in the order that
defines each user's sequence, plus a catalog (item ids and text), and hands both to
:func:`build_tenant`. Everything that is the same across formats lives here so the per-format
modules only describe their files.
"""

from __future__ import annotations

import gzip
import html
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from rec.data.schema import DataError, ItemTable, Tenant, validate_tenant_id

__all__ = [
    "SIGNATURES",
    "build_tenant",
    "clean_text",
    "decode_bytes",
    "join_fields",
    "read_bytes",
    "read_delimited",
    "read_text",
    "require_files",
    "resolve_stem",
    "select_users",
    "truncate",
]

# Files that identify each on-disk format. Only used to *suggest* the right format when the files a
# loader expects are missing, e.g. when a seqrec source points at an ml-100k folder.
SIGNATURES: dict[str, tuple[str, ...]] = {
    "movielens-100k": ("u.data", "u.item"),
    "movielens-1m": ("ratings.dat", "movies.dat"),
    "movielens-1m-tsv": ("interactions_without_ratings.tsv.gz", "movies.dat"),
    "seqrec": ("interactions.tsv.gz", "items.jsonl.gz"),
    "unisrec": ("*.item2index", "*.text"),
    "lcrec": ("*.inter.json", "*.item.json"),
    "s3rec": ("*_item2attributes.json",),
    "hetrec-lastfm": ("user_artists.dat", "artists.dat"),
}


# --- files ------------------------------------------------------------------------------------
def _guess_format(folder: Path) -> str | None:
    for fmt, patterns in SIGNATURES.items():
        if all(any(folder.glob(p)) for p in patterns):
            return fmt
    return None


def _folder_listing(folder: Path, limit: int = 12) -> str:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
    return shown or "(empty folder)"


def require_files(folder: Path, names: Sequence[str], fmt: str) -> dict[str, Path]:
    """Check that ``folder`` holds every file in ``names``; return ``{name: path}``.

    Raises:
        DataError: The folder or a file is missing. The message lists the files the format
            expects, what the folder holds, and a likely format when the files match another one.
    """
    folder = Path(folder)
    expects = ", ".join(names)
    if not str(folder) or str(folder) == ".":
        raise DataError(f"format {fmt!r}: no path given; set path to a folder holding {expects}")
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(f"format {fmt!r}: {folder} {what}; expected a folder holding {expects}")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        guess = _guess_format(folder)
        hint = f"; these files look like format {guess!r}" if guess and guess != fmt else ""
        raise DataError(
            f"format {fmt!r}: {folder} lacks {', '.join(missing)} (the format expects {expects}); "
            f"found: {_folder_listing(folder)}{hint}"
        )
    return {n: folder / n for n in names}


def resolve_stem(folder: Path, suffix: str, subset: str | None, fmt: str) -> str:
    """Pick the file stem (e.g. ``Beauty`` in ``Beauty.txt``) a multi-dataset folder is read by.

    Args:
        folder: Dataset folder.
        suffix: File name ending that marks a dataset, e.g. ``"_item2attributes.json"``.
        subset: The stem the user asked for; None picks the only one present.
        fmt: Format name, for messages.

    Raises:
        DataError: The folder is missing, has no such file, or has several and none was chosen.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(f"format {fmt!r}: {folder} {what}; expected a folder holding <subset>{suffix} files")
    stems = sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}") if p.is_file())
    if subset is not None:
        if subset not in stems:
            raise DataError(
                f"format {fmt!r}: {folder / (subset + suffix)} not found; subsets here: "
                f"{', '.join(stems) or 'none'} (found: {_folder_listing(folder)})"
            )
        return subset
    if len(stems) == 1:
        return stems[0]
    if not stems:
        guess = _guess_format(folder)
        hint = f"; these files look like format {guess!r}" if guess and guess != fmt else ""
        raise DataError(
            f"format {fmt!r}: {folder} has no *{suffix} file; found: {_folder_listing(folder)}{hint}"
        )
    raise DataError(f"format {fmt!r}: {folder} holds several datasets ({', '.join(stems)}); choose one with subset")


def read_bytes(path: Path) -> bytes:
    """Raw bytes of a file, gunzipped when the name ends in ``.gz``."""
    try:
        if str(path).endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return Path(path).read_bytes()
    except (OSError, EOFError) as e:  # gzip raises BadGzipFile (an OSError) or EOFError on truncation
        raise DataError(f"{path}: cannot read ({e})") from None


def decode_bytes(data: bytes) -> str:
    """UTF-8 if it decodes, else Latin-1 (MovieLens, HetRec readme). Latin-1 never fails."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_text(path: Path) -> str:
    """A whole text file (gzip or plain) decoded with :func:`decode_bytes`."""
    return decode_bytes(read_bytes(path))


def read_delimited(
    path: Path,
    sep: str,
    names: Sequence[str],
    *,
    header: bool = False,
    int_cols: Sequence[str] = (),
    optional_int_cols: Sequence[str] = (),
    text: str | None = None,
    shown_sep: str | None = None,
) -> pd.DataFrame:
    """Parse a delimited file of exactly ``len(names)`` fields per line.

    Integer columns are checked; a bad line is reported with its 1-based line number.

    Args:
        path: File to read (``.gz`` is decompressed); also named in errors.
        sep: One-character field separator.
        names: Column names for the fields, in order.
        header: Whether the first line is a header (it is skipped, not checked).
        int_cols: Columns that must hold integers on every line.
        optional_int_cols: Integer columns that may be empty (empty -> -1).
        text: The decoded file content, when the caller already has it (e.g. after a rewrite).
        shown_sep: The separator to name in errors when ``text`` was rewritten (``"::"``).

    Returns:
        DataFrame with ``names`` as columns; int columns are int64, the others str.

    Raises:
        DataError: Wrong number of fields or a non-integer value, naming the file and line.
    """
    if text is None:
        text = read_text(path)
    first = 2 if header else 1  # line number of the first data row
    expected = f"{len(names)} {shown_sep or sep!r}-separated fields ({', '.join(names)})"
    dtypes: dict[str, object] = {c: str for c in names}
    dtypes.update({c: np.int64 for c in int_cols})
    dtypes.update({c: np.float64 for c in optional_int_cols})  # float: empty cells become NaN
    try:
        df = _read_csv(text, sep, names, header, dtypes)
    except pd.errors.ParserError as e:
        m = re.search(r"Expected \d+ fields in line (\d+), saw (\d+)", str(e))
        if m:
            raise DataError(f"{path}, line {m.group(1)}: {m.group(2)} fields; expected {expected}") from None
        raise DataError(f"{path}: malformed line ({e}); expected {expected} per line") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; expected {expected} per line") from None
    except (ValueError, OverflowError):
        # A non-integer or missing value: re-read as text only now, to name the line (slow path).
        _raise_bad_int(path, text, sep, names, header, (*int_cols, *optional_int_cols), optional_int_cols, expected)
        raise  # _raise_bad_int always raises; this keeps type checkers aware
    _check_short_lines(path, text, sep, names, header, df, expected)
    for col in optional_int_cols:
        vals = df[col]
        frac = (vals.notna() & (vals != np.floor(vals.fillna(0)))).to_numpy()
        if frac.any():
            i = int(np.argmax(frac))
            line = _line_of(text, i, first)
            raise DataError(f"{path}, line {line}: {col}={vals.iloc[i]!r} is not an integer; expected {expected}")
        df[col] = vals.fillna(-1).astype(np.int64)
    for col in names:
        if col not in int_cols and col not in optional_int_cols:
            df[col] = df[col].fillna("")
    return df


def _read_csv(text: str, sep: str, names: Sequence[str], header: bool, dtypes: dict[str, object]) -> pd.DataFrame:
    # quoting=3 (QUOTE_NONE): these formats never quote, and titles contain '"' characters.
    return pd.read_csv(
        io.StringIO(text), sep=sep, header=None, names=list(names), skiprows=1 if header else 0, dtype=dtypes,
        na_values=[""], keep_default_na=False, quoting=3, engine="c", skip_blank_lines=True, index_col=False,
    )


def _check_short_lines(
    path: Path, text: str, sep: str, names: Sequence[str], header: bool, df: pd.DataFrame, expected: str
) -> None:
    """pandas pads a short line with empty cells; find one by counting separators (fast when none)."""
    head = text.split("\n", 1)[0].count(sep) if header else 0
    if text.count(sep) - head >= len(df) * (len(names) - 1):
        return  # too-long lines already failed to parse, so every line has all its fields
    first = 2 if header else 1
    for n, ln in enumerate(text.splitlines(), start=1):
        if n >= first and ln and ln.count(sep) < len(names) - 1:
            raise DataError(f"{path}, line {n}: {ln.count(sep) + 1} fields; expected {expected}")


def _raise_bad_int(
    path: Path, text: str, sep: str, names: Sequence[str], header: bool,
    cols: Sequence[str], optional: Sequence[str], expected: str,
) -> None:
    df = _read_csv(text, sep, names, header, {c: str for c in names})
    _check_short_lines(path, text, sep, names, header, df, expected)
    first = 2 if header else 1
    for col in cols:
        raw = df[col].fillna("")
        vals = pd.to_numeric(raw, errors="coerce")
        bad = vals.isna().to_numpy() & ~((raw == "").to_numpy() & (col in optional))
        bad |= (vals.notna() & (vals != np.floor(vals.fillna(0)))).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            line = _line_of(text, i, first)
            raise DataError(f"{path}, line {line}: {col}={raw.iloc[i]!r} is not an integer; expected {expected}")
    raise DataError(f"{path}: could not parse; expected {expected} per line")


def _line_of(text: str, row: int, first: int) -> int:
    """1-based line number of data row ``row``, counting the blank lines pandas skipped."""
    seen = -1
    for n, line in enumerate(text.splitlines()[first - 1 :], start=first):
        if line:
            seen += 1
            if seen == row:
                return n
    return first + row


# --- text -------------------------------------------------------------------------------------
def clean_text(value: object, unescape: bool = False) -> str:
    """One line of text: whitespace runs collapsed, optionally HTML entities (``&amp;``) decoded."""
    if value is None or (np.isscalar(value) and pd.isna(value)) or value is pd.NA:
        return ""
    s = str(value)
    if unescape:
        s = html.unescape(s)
    return " ".join(s.split())


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters at a word boundary, marking the cut."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip(" ,.;:") + "…"


def join_fields(title: object, fields: Iterable[tuple[str, object]] = (), unescape: bool = False) -> str:
    """Item text as ``"title | label: value | label: a, b"``; empty parts are left out.

    Args:
        title: The item's name (first, unlabelled).
        fields: ``(label, value)`` pairs; a list/tuple value is joined with ", ".
        unescape: Decode HTML entities in every part.
    """
    parts = [clean_text(title, unescape)]
    for label, value in fields:
        if isinstance(value, (list, tuple)):
            value = ", ".join(v for v in (clean_text(x, unescape) for x in value) if v)
        v = clean_text(value, unescape)
        if v:
            parts.append(f"{label}: {v}")
    return " | ".join(p for p in parts if p)


# --- tenant -----------------------------------------------------------------------------------
def build_tenant(
    name: str,
    source: str,
    users: Sequence | np.ndarray | pd.Series,
    items: Sequence | np.ndarray | pd.Series,
    times: Sequence | np.ndarray | pd.Series | None,
    catalog_ids: Sequence | np.ndarray | pd.Series,
    catalog_text: Sequence[str],
    *,
    unknown_items: str = "error",
    where: str = "",
) -> Tenant:
    """Build a :class:`Tenant` from a long table of interactions whose row order is chronological.

    Rows are grouped by user with a stable sort, so each user's sequence keeps the input order.
    Users are ordered by id (numerically when all ids are integers).

    Args:
        name: Tenant id.
        source: Provenance string stored on the tenant (format and path).
        users: ``(I,)`` user id per interaction.
        items: ``(I,)`` external item id per interaction (compared as strings).
        times: ``(I,)`` unix seconds, -1 where unknown; None = all unknown.
        catalog_ids: ``(N,)`` external ids of the catalog, in dense-index order.
        catalog_text: ``(N,)`` item text.
        unknown_items: ``"error"`` or ``"append"`` (add interacted items missing from the catalog
            with empty text, in order of first appearance).
        where: The file to name in errors about the interactions.

    Raises:
        DataError: Duplicate catalog ids, or unknown items with ``unknown_items="error"``.
    """
    ids = pd.Index(np.asarray(catalog_ids, dtype=object).astype(str))
    text = list(catalog_text)
    if not ids.is_unique:
        dup = ids[ids.duplicated()][0]
        raise DataError(f"{source}: item id {dup!r} appears more than once in the catalog")
    # Factorize first and convert only the distinct ids to text: ~10x faster than converting
    # every row on million-interaction files.
    icodes, iuniq = pd.factorize(np.asarray(items))
    iuniq_str = np.asarray(iuniq, dtype=object).astype(str)
    to_catalog = ids.get_indexer(iuniq_str)
    missing = to_catalog < 0
    if missing.any():
        new = pd.unique(iuniq_str[missing])
        if unknown_items != "append":
            raise DataError(
                f"{where or source}: {len(new)} interacted item id(s) are not in the catalog "
                f"(e.g. {', '.join(repr(str(x)) for x in new[:5])})"
            )
        to_catalog[missing] = len(ids) + pd.Index(new).get_indexer(iuniq_str[missing])
        ids = ids.append(pd.Index(new))
        text += [""] * len(new)
    codes = to_catalog[icodes]
    ucodes, uniques = _factorize_users(users)
    order = np.argsort(ucodes, kind="stable")  # stable: keeps each user's chronological order
    counts = np.bincount(ucodes, minlength=len(uniques))
    offsets = np.zeros(len(uniques) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    ts = np.full(len(codes), -1, dtype=np.int64) if times is None else np.asarray(times, dtype=np.int64)
    return Tenant(
        name=validate_tenant_id(name),
        items=ItemTable(np.asarray(ids, dtype=object).astype(str), text),
        users=uniques,
        offsets=offsets,
        item_index=codes[order].astype(np.int64),
        timestamps=ts[order],
        source=source,
    )


def _factorize_users(users: Sequence | np.ndarray | pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Dense user codes and their ids as text, ordered by id (numerically if all are integers)."""
    codes, uniq = pd.factorize(np.asarray(users))
    text = np.asarray(uniq, dtype=object).astype(str)
    try:
        order = np.lexsort((text, text.astype(np.int64)))  # integer ids: 2 before 10
    except (ValueError, OverflowError):
        order = np.argsort(text, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], text[order]


def select_users(tenant: Tenant, rows: np.ndarray) -> Tenant:
    """The tenant restricted to user rows ``rows`` (ascending), same catalog; vectorised."""
    rows = np.asarray(rows, dtype=np.int64)
    lengths = np.diff(tenant.offsets)[rows]
    starts = tenant.offsets[rows]
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # index of every kept interaction: start of its user + position within the user
    take = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    return Tenant(
        name=tenant.name,
        items=tenant.items,
        users=tenant.users[rows],
        offsets=offsets,
        item_index=tenant.item_index[take],
        timestamps=tenant.timestamps[take],
        source=tenant.source,
    )
