"""Tests for rec.data.loaders: real-data counts (from datasets/README.md), ordering, text, errors."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rec.config import TenantSource
from rec.data.loaders import FORMATS, load_source
from rec.data.schema import DataError, Tenant

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"
realdata = pytest.mark.realdata


def _need_data() -> None:
    if not DATA.is_dir():
        pytest.skip(f"shared datasets not found at {DATA}")


def _load(min_seq_len: int = 1, **kw) -> Tenant:
    return load_source(TenantSource(**kw), min_seq_len=min_seq_len)


def _counts(t: Tenant) -> tuple[int, int, int]:
    return t.num_users, t.num_items, t.num_interactions


def _assert_chronological(t: Tenant) -> None:
    """Known timestamps never decrease within a user (-1 = unknown is skipped)."""
    ts = t.timestamps
    for u in range(t.num_users):
        s = ts[t.offsets[u] : t.offsets[u + 1]]
        s = s[s >= 0]
        assert (np.diff(s) >= 0).all(), f"user {t.users[u]} is not chronological"


def _text(t: Tenant, item_id: str) -> str:
    i = t.item_index_of(item_id)
    assert i is not None, item_id
    return t.items.text[i]


# --- real data: one load per dataset per module ------------------------------------------------
@pytest.fixture(scope="module")
def ml100k() -> Tenant:
    _need_data()
    return _load(format="movielens-100k", path=str(DATA / "ml-100k"))


@pytest.fixture(scope="module")
def ml1m_tsv() -> tuple[Tenant, float]:
    _need_data()
    t0 = time.perf_counter()
    t = _load(format="movielens-1m-tsv", path=str(DATA / "ml-1m"))
    return t, time.perf_counter() - t0


@pytest.fixture(scope="module")
def beauty() -> Tenant:
    _need_data()
    return _load(format="seqrec", path=str(DATA / "seqrec-benchmark" / "amazon2014-beauty"))


@realdata
def test_ml100k_counts_text_and_order(ml100k: Tenant) -> None:
    assert _counts(ml100k) == (943, 1682, 100_000)
    assert ml100k.name == "ml-100k"
    _assert_chronological(ml100k)
    assert (ml100k.timestamps > 0).all()
    # Latin-1 decoded, genres from u.genre, release year added only when it differs from the title's
    assert _text(ml100k, "543") == "Misérables, Les (1995) | genres: Drama, Musical"
    assert _text(ml100k, "1") == "Toy Story (1995) | genres: Animation, Children's, Comedy"
    assert "released: 1997" in _text(ml100k, "1252")
    assert list(ml100k.users[:3]) == ["1", "2", "3"]  # numeric order, not "1", "10", "100"


@realdata
def test_ml1m_tsv_counts_order_and_speed(ml1m_tsv: tuple[Tenant, float]) -> None:
    t, seconds = ml1m_tsv
    assert _counts(t) == (6040, 3883, 1_000_209)
    assert seconds < 10, f"ml-1m took {seconds:.1f}s"
    assert int((t.timestamps == -1).sum()) == 279
    _assert_chronological(t)
    # the file's row order is the sequence order (ties included): user 1 starts 3186, 1721, 1022
    assert [t.items.ids[i] for i in t.sequence(0)[:3]] == ["3186", "1721", "1022"]
    assert _text(t, "73") == "Misérables, Les (1995) | genres: Drama, Musical"
    assert len(np.unique(t.item_index)) == 3706  # 177 catalog movies were never rated, and are kept


@realdata
def test_seqrec_beauty(beauty: Tenant) -> None:
    assert _counts(beauty) == (22_332, 12_086, 198_215)
    _assert_chronological(beauty)
    assert (beauty.timestamps > 0).all()
    assert not any("&amp;" in x or "&quot;" in x for x in beauty.items.text)
    assert sum("&" in x for x in beauty.items.text) > 100  # entities decoded, not dropped


@realdata
@pytest.mark.parametrize(
    ("subset", "counts"), [("steam_100000", (10_369, 3_593, 126_824)), ("food", (17_813, 41_240, 555_618))]
)
def test_seqrec_steam_and_food(subset: str, counts: tuple[int, int, int]) -> None:
    _need_data()
    # path = benchmark root + subset, the other accepted spelling
    t = _load(format="seqrec", path=str(DATA / "seqrec-benchmark"), subset=subset)
    assert _counts(t) == counts
    assert t.name == subset
    _assert_chronological(t)


@realdata
def test_unisrec_scientific() -> None:
    _need_data()
    t = _load(format="unisrec", path=str(DATA / "amazon-scientific-unisrec"))
    assert (t.num_users, t.num_items) == (8_442, 4_385)
    # README sums test histories + target: 59,384. RecBole cut 3 histories at 50 items; stitching
    # all rows recovers 43 more interactions (users with 80, 60 and 56 items).
    assert t.num_interactions == 59_427
    assert sorted(t.lengths())[-3:] == [56, 60, 80]
    assert (t.timestamps == -1).all()
    assert t.items.ids[0] == "B00TNNWMXI" and t.items.text[0].startswith("eSUN Bronze filament")
    # every test row is the tail of its user's sequence
    test = pd.read_csv(DATA / "amazon-scientific-unisrec" / "Scientific.test.inter", sep="\t")
    users = dict(pd.read_csv(DATA / "amazon-scientific-unisrec" / "Scientific.user2index", sep="\t", header=None).values)
    row_of = {u: r for r, u in enumerate(t.users)}
    by_index = {v: k for k, v in users.items()}
    items = pd.read_csv(DATA / "amazon-scientific-unisrec" / "Scientific.item2index", sep="\t", header=None)
    asin = dict(zip(items[1], items[0]))
    for u, hist, target in test.head(500).itertuples(index=False):
        want = [asin[int(x)] for x in str(hist).split()] + [asin[int(target)]]
        got = [t.items.ids[i] for i in t.sequence(row_of[by_index[u]])]
        assert got[-len(want) :] == want


@realdata
def test_lcrec_office() -> None:
    _need_data()
    t = _load(format="lcrec", path=str(DATA / "amazon2014-office-lcrec"))
    assert _counts(t) == (4_905, 2_420, 53_258)
    assert (t.timestamps == -1).all()
    assert t.lengths().min() >= 5
    text = t.items.text[t.item_index_of("2")]
    assert text.startswith("AT&T 210 Corded Phone") and "brand: AT&T" in text and "categories: Office Electronics" in text
    assert max(len(x) for x in t.items.text) < 800  # descriptions are truncated


@realdata
def test_s3rec_subsets() -> None:
    _need_data()
    t = _load(format="s3rec", path=str(DATA / "s3rec-amazon"), subset="Beauty")
    assert _counts(t) == (22_363, 12_101, 198_502)
    assert t.name == "beauty"
    assert not t.items.has_text and (t.timestamps == -1).all()
    assert _counts(_load(format="s3rec", path=str(DATA / "s3rec-amazon"), subset="LastFM")) == (1_090, 3_646, 52_551)
    with pytest.raises(DataError, match="several datasets.*Beauty.*choose one with subset"):
        _load(format="s3rec", path=str(DATA / "s3rec-amazon"))
    with pytest.raises(DataError, match="Yelp_item2attributes.json not found; subsets here: Beauty, LastFM"):
        _load(format="s3rec", path=str(DATA / "s3rec-amazon"), subset="Yelp")


@realdata
def test_sasrec_video() -> None:
    _need_data()
    t = _load(format="sasrec", path=str(DATA / "sasrec"))
    assert _counts(t) == (31_013, 23_715, 287_107)
    assert not t.items.has_text
    t2 = _load(format="sasrec", path=str(DATA / "sasrec" / "Video.txt"), min_seq_len=3)
    assert t2.name == "video" and t2.lengths().min() >= 3


@realdata
def test_hetrec_lastfm() -> None:
    _need_data()
    t = _load(format="hetrec-lastfm", path=str(DATA / "hetrec2011-lastfm-2k"))
    assert _counts(t) == (1_892, 17_632, 92_834)
    assert (t.timestamps == -1).all()
    ua = pd.read_csv(DATA / "hetrec2011-lastfm-2k" / "user_artists.dat", sep="\t")
    weight = dict(zip(zip(ua.userID.astype(str), ua.artistID.astype(str)), ua.weight))
    for u in range(0, t.num_users, 97):  # sequences are by descending play count
        w = [weight[(t.users[u], t.items.ids[i])] for i in t.sequence(u)]
        assert w == sorted(w, reverse=True)
    assert "Röyksopp" in t.items.text


# --- post-processing --------------------------------------------------------------------------
@realdata
def test_min_seq_len_and_seeded_user_sample(ml100k: Tenant) -> None:
    path = str(DATA / "ml-100k")
    a = _load(format="movielens-100k", path=path, max_users=50, seed=1, min_seq_len=30)
    b = _load(format="movielens-100k", path=path, max_users=50, seed=1, min_seq_len=30)
    c = _load(format="movielens-100k", path=path, max_users=50, seed=2, min_seq_len=30)
    assert a.num_users == 50 and a.lengths().min() >= 30
    assert list(a.users) == list(b.users) and list(a.users) != list(c.users)
    assert list(a.users) == sorted(a.users, key=int)
    assert a.num_items == 1682  # the catalog is never cut
    u = list(ml100k.users).index(a.users[0])
    assert np.array_equal(a.sequence(0), ml100k.sequence(u))
    assert np.array_equal(a.timestamps[: a.offsets[1]], ml100k.timestamps[ml100k.offsets[u] : ml100k.offsets[u + 1]])
    named = _load(format="movielens-100k", path=path, name="my-tenant", max_users=5)
    assert named.name == "my-tenant"


@realdata
def test_wrong_format_names_files_and_suggests_format() -> None:
    _need_data()
    wrong = r"lacks interactions.tsv.gz, items.jsonl.gz.*u\.data.*look like format 'movielens-100k'"
    with pytest.raises(DataError, match=wrong):
        _load(format="seqrec", path=str(DATA / "ml-100k"))
    with pytest.raises(DataError, match="use format 'movielens-1m-tsv'"):
        _load(format="movielens-1m", path=str(DATA / "ml-1m"))


# --- synthetic files: ml-1m '::' format and errors ----------------------------------------------
def _write_ml1m(folder: Path, ratings: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movies.dat").write_bytes(
        (
            "1::Toy Story (1995)::Animation|Children's|Comedy\n"
            "2::Misérables, Les (1995)::Drama|Musical\n"
            "3::Heat (1995)::Action\n"
        ).encode("latin-1")
    )
    (folder / "ratings.dat").write_text(ratings)
    return folder


def test_movielens_1m_dat_format(tmp_path: Path) -> None:
    folder = _write_ml1m(tmp_path / "ml-1m", "1::2::5::300\n1::1::3::100\n2::3::4::50\n1::3::1::200\n2::1::2::40\n")
    t = _load(format="movielens-1m", path=str(folder))
    assert t.name == "ml-1m" and _counts(t) == (2, 3, 5)
    assert [t.items.ids[i] for i in t.sequence(0)] == ["1", "3", "2"]  # sorted by time
    assert list(t.timestamps[:3]) == [100, 200, 300]
    assert t.items.text[1] == "Misérables, Les (1995) | genres: Drama, Musical"


@pytest.mark.parametrize(
    ("ratings", "match"),
    [
        ("1::2::5::300\n1::1::3::100\n1::3::x::200\n", r"ratings.dat, line 3: rating='x' is not an integer"),
        ("1::2::5::300\n1::1::3\n", r"ratings.dat, line 2: 3 fields; expected 4"),
        ("1::2::5::300\n1::1::3::100::9\n", r"ratings.dat, line 2: 5 fields; expected 4"),
    ],
)
def test_malformed_dat_line_is_named(tmp_path: Path, ratings: str, match: str) -> None:
    folder = _write_ml1m(tmp_path / "ml-1m", ratings)
    with pytest.raises(DataError, match=match):
        _load(format="movielens-1m", path=str(folder))


def test_missing_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist; expected a folder holding u\.data, u\.item, u\.genre"):
        _load(format="movielens-100k", path=str(tmp_path / "nope"))
    (tmp_path / "u.data").write_text("1\t1\t5\t10\n")
    with pytest.raises(DataError, match=r"lacks u\.item, u\.genre \(the format expects u\.data, u\.item, u\.genre\)"):
        _load(format="movielens-100k", path=str(tmp_path))
    with pytest.raises(DataError, match="no file loader for format 'synthetic'"):
        load_source(TenantSource(format="synthetic", path=str(tmp_path)))
    assert "synthetic" not in FORMATS


def test_empty_tenant_after_filtering(tmp_path: Path) -> None:
    folder = _write_ml1m(tmp_path / "ml-1m", "1::2::5::300\n1::1::3::100\n2::3::4::50\n")
    with pytest.raises(DataError, match="no user has at least min_seq_len=3 interactions"):
        _load(format="movielens-1m", path=str(folder), min_seq_len=3)


def test_bad_gzip_and_json(tmp_path: Path) -> None:
    (tmp_path / "interactions.tsv.gz").write_bytes(b"not gzip")
    (tmp_path / "items.jsonl.gz").write_bytes(gzip.compress(b'{"item_id": 1, "title": "a"}\n'))
    with pytest.raises(DataError, match="interactions.tsv.gz: cannot read"):
        _load(format="seqrec", path=str(tmp_path))
    (tmp_path / "interactions.tsv.gz").write_bytes(gzip.compress(b"user_id\titem_id\ttimestamp\n1\t1\t5\n"))
    (tmp_path / "items.jsonl.gz").write_bytes(gzip.compress(b'{"item_id": 1, "title": "a"}\nnot json\n'))
    with pytest.raises(DataError, match="items.jsonl.gz, line 2: expected a JSON object"):
        _load(format="seqrec", path=str(tmp_path))


# --- generic ----------------------------------------------------------------------------------
_INTER = pd.DataFrame(
    {
        "uid": ["u2", "u1", "u1", "u2", "u1", "u2", "u3"],
        "sku": ["b", "c", "a", "a", "b", "x", "a"],
        "ts": [20, 30, 10, 10, 20, 30, 5],
    }
)
_ITEMS = pd.DataFrame(
    {"item_id": ["a", "b", "c", "z"], "title": ["Café", "Bolt", "Cord", "Zip"], "brand": ["Acme", "", "Cee", "Zed"]}
)


def _check_generic(t: Tenant) -> None:
    assert list(t.users) == ["u1", "u2", "u3"]
    assert [t.items.ids[i] for i in t.sequence(0)] == ["a", "b", "c"]
    assert [t.items.ids[i] for i in t.sequence(1)] == ["a", "b", "x"]
    assert list(t.timestamps[:3]) == [10, 20, 30]
    # full catalog: table items (z never interacted) + interacted items missing from it ("" text)
    assert list(t.items.ids) == ["a", "b", "c", "z", "x"]
    assert t.items.text == ["Café | brand: Acme", "Bolt", "Cord | brand: Cee", "Zip | brand: Zed", ""]


@pytest.mark.parametrize("ext", ["csv", "tsv", "parquet"])
def test_generic_round_trip(tmp_path: Path, ext: str) -> None:
    inter, items = tmp_path / f"events.{ext}", tmp_path / f"items.{'parquet' if ext == 'parquet' else 'csv'}"
    if ext == "parquet":
        _INTER.to_parquet(inter)
        _ITEMS.to_parquet(items)
    else:
        _INTER.to_csv(inter, sep="\t" if ext == "tsv" else ",", index=False)
        _ITEMS.to_csv(items, index=False, encoding="latin-1")  # exercises the Latin-1 fallback
    t = _load(format="generic", path=str(inter), user_col="uid", item_col="sku", time_col="ts",
              items_path=str(items), text_cols=["title", "brand"])
    assert t.name == "events"
    _check_generic(t)


def test_generic_dates_file_order_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "log.csv"
    p.write_text("user_id,item_id,when\n1,a,2020-01-02\n1,b,2020-01-01T12:00:00Z\n2,a,2019-05-05\n")
    t = _load(format="generic", path=str(p), time_col="when")
    assert [t.items.ids[i] for i in t.sequence(0)] == ["b", "a"] and t.timestamps[0] == 1577880000
    # the default time_col ("timestamp") is absent: file order, no times
    t = _load(format="generic", path=str(p))
    assert [t.items.ids[i] for i in t.sequence(0)] == ["a", "b"] and (t.timestamps == -1).all()
    assert t.items.text == ["", ""]
    with pytest.raises(DataError, match=r"no column 'timestamp'.*columns found: user_id, item_id, when"):
        _load(format="generic", path=str(p), time_col="timestamp")
    with pytest.raises(DataError, match=r"no column 'user'.*columns found: user_id, item_id, when"):
        _load(format="generic", path=str(p), user_col="user", time_col=None)
    with pytest.raises(DataError, match=r"items.csv not found"):
        _load(format="generic", path=str(p), time_col=None, items_path=str(tmp_path / "items.csv"))
    p.write_text("user_id,item_id,timestamp\n1,a,5\n1,b,\n")
    with pytest.raises(DataError, match=r"log.csv, line 3: empty 'timestamp'.*time_col: null"):
        _load(format="generic", path=str(p))
    p.write_text("user_id,item_id,timestamp\n1,a,5\n1,b,soon\n")
    with pytest.raises(DataError, match=r"log.csv, line 3: timestamp='soon' is neither unix seconds nor a date-time"):
        _load(format="generic", path=str(p))
    (tmp_path / "items.csv").write_text("item_id,name\na,A\n")
    no_title = r"items.csv has no column 'title' \(set by text_cols\); columns found: item_id, name"
    with pytest.raises(DataError, match=no_title):
        _load(format="generic", path=str(p), time_col=None, items_path=str(tmp_path / "items.csv"))


def test_invalid_name_and_empty_id(tmp_path: Path) -> None:
    folder = _write_ml1m(tmp_path / "ml-1m", "1::2::5::300\n")
    with pytest.raises(DataError, match="invalid tenant id 'My Shop'"):
        _load(format="movielens-1m", path=str(folder), name="My Shop")
    p = tmp_path / "log.csv"
    p.write_text("user_id,item_id\n1,a\n , b\n")
    with pytest.raises(DataError, match=r"log.csv, line 3: empty 'user_id'"):
        _load(format="generic", path=str(p))
