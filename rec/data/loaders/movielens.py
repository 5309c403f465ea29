"""MovieLens loaders (GroupLens): ML-100K, ML-1M (``::`` files) and the ML-1M sequence TSV.

Item text is ``"<title> | released: <year> | genres: a, b"`` (the year only when the title does not
already end in it). MovieLens text files are Latin-1; :func:`decode_bytes` falls back to it.

Reference: F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History and Context", ACM TiiS 2015.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from rec.data.loaders._common import build_tenant, join_fields, read_delimited, read_text, require_files
from rec.data.schema import DataError, Tenant

__all__ = ["load_movielens_100k", "load_movielens_1m", "load_movielens_1m_tsv", "read_movies_dat"]

_YEAR_AT_END = re.compile(r"\((\d{4})\)\s*$")


def _sort_by_time(users: pd.Series, times: pd.Series) -> np.ndarray:
    """Row order that makes each user's rows chronological; ties keep file order (stable)."""
    return np.lexsort((np.arange(len(times)), times.to_numpy(), users.to_numpy()))


# --- ML-100K ----------------------------------------------------------------------------------
def load_movielens_100k(folder: Path, name: str) -> Tenant:
    """MovieLens 100K: ``u.data`` (tab: user, item, rating, unix time) + ``u.item`` + ``u.genre``.

    ``u.data`` is in random order, so each user's rows are sorted by timestamp (ties keep file
    order). The catalog is every movie of ``u.item`` (1,682), rated or not.

    Raises:
        DataError: Missing files or malformed lines (file and line named).
    """
    fmt = "movielens-100k"
    files = require_files(folder, ["u.data", "u.item", "u.genre"], fmt)
    data = read_delimited(
        files["u.data"], "\t", ["user", "item", "rating", "time"], int_cols=["user", "item", "rating", "time"]
    )
    genres = read_delimited(files["u.genre"], "|", ["genre", "index"], int_cols=["index"])
    genre_names = dict(zip(genres["index"], genres["genre"]))
    n_genres = len(genre_names)
    cols = ["item", "title", "release", "video_release", "url", *[f"g{i}" for i in range(n_genres)]]
    movies = read_delimited(files["u.item"], "|", cols, int_cols=["item", *cols[5:]])
    flags = movies[cols[5:]].to_numpy()
    texts = []
    for row, title, release in zip(flags, movies["title"], movies["release"]):
        # "unknown" is a placeholder genre, not information about the movie
        names = [genre_names[i] for i in np.flatnonzero(row) if genre_names[i] != "unknown"]
        year = release[-4:] if release[-4:].isdigit() else ""
        texts.append(_movie_text(title, names, year))
    order = _sort_by_time(data["user"], data["time"])
    data = data.iloc[order]
    return build_tenant(
        name, f"{fmt}:{folder}", data["user"], data["item"], data["time"], movies["item"], texts,
        where=str(files["u.data"]),
    )


def _movie_text(title: str, genres: list[str], year: str = "") -> str:
    m = _YEAR_AT_END.search(title)
    released = "" if (not year or (m and m.group(1) == year)) else year
    return join_fields(title, [("released", released), ("genres", genres)])


# --- ML-1M ------------------------------------------------------------------------------------
def read_movies_dat(path: Path) -> tuple[pd.Series, list[str]]:
    """``movies.dat`` (``MovieID::Title::Genres``, Latin-1) -> (movie ids, item texts).

    Raises:
        DataError: A line without three ``::`` fields or a non-integer id (line named).
    """
    movies = read_delimited(
        path, "\t", ["item", "title", "genres"], int_cols=["item"],
        text=_colons_to_tabs(read_text(path), path), shown_sep="::",
    )
    texts = [_movie_text(t, [g for g in gs.split("|") if g]) for t, gs in zip(movies["title"], movies["genres"])]
    return movies["item"], texts


def _colons_to_tabs(text: str, path: Path) -> str:
    # The C parser only takes one-character separators and the python engine is ~10x slower on
    # 1M lines, so "::" is rewritten to a tab; a tab already in the file would shift fields.
    if "\t" in text:
        line = text[: text.index("\t")].count("\n") + 1
        raise DataError(f"{path}, line {line}: contains a tab; expected '::'-separated fields")
    return text.replace("::", "\t")


def load_movielens_1m(folder: Path, name: str) -> Tenant:
    """MovieLens 1M as released: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) + ``movies.dat``.

    Each user's ratings are sorted by timestamp (ties keep file order). The catalog is every movie
    of ``movies.dat`` (3,883). The shared copy lacks ``ratings.dat``; use ``movielens-1m-tsv`` there.

    Raises:
        DataError: Missing files (suggesting ``movielens-1m-tsv`` when that file is present) or
            malformed lines (file and line named).
    """
    fmt = "movielens-1m"
    folder = Path(folder)
    has_tsv = (folder / "interactions_without_ratings.tsv.gz").is_file()
    if has_tsv and not (folder / "ratings.dat").is_file():
        raise DataError(
            f"format {fmt!r}: {folder} lacks ratings.dat (the format expects ratings.dat, movies.dat); it has "
            "interactions_without_ratings.tsv.gz, so use format 'movielens-1m-tsv'"
        )
    files = require_files(folder, ["ratings.dat", "movies.dat"], fmt)
    path = files["ratings.dat"]
    ratings = read_delimited(
        path, "\t", ["user", "item", "rating", "time"], int_cols=["user", "item", "rating", "time"],
        text=_colons_to_tabs(read_text(path), path), shown_sep="::",
    )
    ids, texts = read_movies_dat(files["movies.dat"])
    ratings = ratings.iloc[_sort_by_time(ratings["user"], ratings["time"])]
    return build_tenant(
        name, f"{fmt}:{folder}", ratings["user"], ratings["item"], ratings["time"], ids, texts, where=str(path)
    )


def load_movielens_1m_tsv(folder: Path, name: str) -> Tenant:
    """ML-1M sequences: ``interactions_without_ratings.tsv.gz`` (user, movie, timestamp) + ``movies.dat``.

    Row order within a user *is* the chronological order (ties in time are ordered as in the
    DiffuRec release), so it is kept as is. 279 rows have an empty timestamp: they become -1.

    Raises:
        DataError: Missing files or malformed lines (file and line named).
    """
    fmt = "movielens-1m-tsv"
    tsv = "interactions_without_ratings.tsv.gz"
    files = require_files(folder, [tsv, "movies.dat"], fmt)
    inter = read_delimited(
        files[tsv], "\t", ["user", "item", "time"], header=True, int_cols=["user", "item"], optional_int_cols=["time"]
    )
    ids, texts = read_movies_dat(files["movies.dat"])
    return build_tenant(
        name, f"{fmt}:{folder}", inter["user"], inter["item"], inter["time"], ids, texts, where=str(files[tsv])
    )
