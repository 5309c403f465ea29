"""HetRec 2011 Last.fm 2K: ``user_artists.dat`` (user, artist, play count) + ``artists.dat`` (names).

**Not chronological.** The only timestamped files (``user_taggedartists*.dat``) are not part of the
shared copy, so each user's "sequence" is their artists by descending play count (ties keep file
order), and every timestamp is -1. Next-item metrics on this tenant measure "predict the next most
played artist", not the next listen. Item text is the artist name; the catalog is every artist of
``artists.dat``. ``artists.dat`` is UTF-8 here but Latin-1 in some copies; both decode.

Reference: I. Cantador, P. Brusilovsky and T. Kuflik, "2nd Workshop on Information Heterogeneity and
Fusion in Recommender Systems (HetRec 2011)", RecSys 2011.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rec.data.loaders._common import build_tenant, clean_text, read_delimited, require_files
from rec.data.schema import Tenant

__all__ = ["load_hetrec_lastfm"]


def load_hetrec_lastfm(folder: Path, name: str) -> Tenant:
    """Load the Last.fm 2K folder.

    Raises:
        DataError: Missing files or malformed lines (file and line named).
    """
    fmt = "hetrec-lastfm"
    files = require_files(folder, ["user_artists.dat", "artists.dat"], fmt)
    ua_cols = ["user", "artist", "weight"]
    ua = read_delimited(files["user_artists.dat"], "\t", ua_cols, header=True, int_cols=ua_cols)
    artists = read_delimited(
        files["artists.dat"], "\t", ["artist", "name", "url", "picture"], header=True, int_cols=["artist"]
    )
    order = np.lexsort((np.arange(len(ua)), -ua["weight"].to_numpy(), ua["user"].to_numpy()))
    ua = ua.iloc[order]
    texts = [clean_text(n) for n in artists["name"]]
    return build_tenant(
        name, f"{fmt}:{folder}", ua["user"], ua["artist"], None, artists["artist"], texts,
        where=str(files["user_artists.dat"]),
    )
