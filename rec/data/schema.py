"""The one internal representation of recommendation data: a :class:`Tenant`.

A tenant is a named catalog (items with text) plus its own users and their chronological
interaction sequences. Every loader returns a ``Tenant``; every model, split and metric reads one.

Layout (CSR, so millions of interactions stay three flat arrays)::

    items.ids        (N,)  external item ids (str), dense index i <-> ids[i]
    items.text       (N,)  item text: title plus whatever attributes exist ("" if none)
    users            (U,)  external user ids (str)
    offsets          (U+1,) int64; user u's interactions are [offsets[u], offsets[u+1])
    item_index       (I,)  int64 dense item indices, chronological within each user
    timestamps       (I,)  int64 unix seconds, or -1 where unknown
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

TENANT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class DataError(ValueError):
    """Input data is missing, malformed or empty. The message names the file and what to fix."""


def validate_tenant_id(name: str) -> str:
    """Return ``name`` if it is a valid tenant id, else raise ``ValueError`` saying the rule."""
    # fullmatch: re's `$` also matches before a trailing newline, so `.match` let "shop\n" through.
    if not isinstance(name, str) or not TENANT_ID_RE.fullmatch(name):
        raise ValueError(
            f"invalid tenant id {name!r}: use 1-64 characters of a-z, 0-9, '_' or '-', "
            "starting with a letter or digit (regex ^[a-z0-9][a-z0-9_-]{0,63}$)"
        )
    return name


def tenant_id_from(text: str) -> str:
    """Turn a dataset/file name into a valid tenant id (lower-case, other chars -> '-')."""
    s = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:64]
    return validate_tenant_id(s or "tenant")


@dataclass(frozen=True)
class ItemTable:
    """A tenant's catalog. ``ids[i]`` is the external id of dense item ``i``; ``text[i]`` its text."""

    ids: np.ndarray
    text: list[str]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.text):
            raise DataError(f"item table: {len(self.ids)} ids but {len(self.text)} texts")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_text(self) -> bool:
        return any(t.strip() for t in self.text)


@dataclass(frozen=True)
class Tenant:
    """One tenant: a catalog plus users with chronological item sequences (see module doc)."""

    name: str
    items: ItemTable
    users: np.ndarray
    offsets: np.ndarray
    item_index: np.ndarray
    timestamps: np.ndarray
    source: str = ""
    _index_of: dict = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        validate_tenant_id(self.name)
        if len(self.items) == 0:
            raise DataError(f"tenant {self.name!r} ({self.source or 'no source'}): the catalog is empty")
        if len(self.users) == 0 or len(self.item_index) == 0:
            raise DataError(f"tenant {self.name!r} ({self.source or 'no source'}): no interactions")
        if self.offsets.shape != (len(self.users) + 1,) or self.offsets[0] != 0 or self.offsets[-1] != len(
            self.item_index
        ):
            raise DataError(f"tenant {self.name!r}: offsets do not match users/interactions")
        if len(self.timestamps) != len(self.item_index):
            raise DataError(f"tenant {self.name!r}: {len(self.timestamps)} timestamps for {len(self.item_index)} interactions")
        if self.item_index.min() < 0 or self.item_index.max() >= len(self.items):
            raise DataError(f"tenant {self.name!r}: an interaction points outside the catalog")

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_sequences(
        cls,
        name: str,
        item_ids: list[str] | np.ndarray,
        item_text: list[str],
        user_ids: list[str] | np.ndarray,
        sequences: list[list[int]] | list[np.ndarray],
        timestamps: list[list[int]] | list[np.ndarray] | None = None,
        source: str = "",
    ) -> Tenant:
        """Build from per-user lists of dense item indices (already chronological)."""
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if len(sequences) else np.zeros(0, np.int64)
        if timestamps is None:
            ts = np.full(len(flat), -1, dtype=np.int64)
        else:
            ts = np.concatenate([np.asarray(t, dtype=np.int64) for t in timestamps]) if len(timestamps) else np.zeros(0, np.int64)
        return cls(
            name=validate_tenant_id(name),
            items=ItemTable(np.asarray(item_ids, dtype=object).astype(str), list(item_text)),
            users=np.asarray(user_ids, dtype=object).astype(str),
            offsets=offsets,
            item_index=flat,
            timestamps=ts,
            source=source,
        )

    # --- access -------------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_interactions(self) -> int:
        return len(self.item_index)

    def sequence(self, u: int) -> np.ndarray:
        """Dense item indices of user ``u`` in chronological order, shape ``(L_u,)``."""
        return self.item_index[self.offsets[u] : self.offsets[u + 1]]

    def sequences(self) -> list[np.ndarray]:
        return [self.sequence(u) for u in range(self.num_users)]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def item_index_of(self, external_id: str) -> int | None:
        """Dense index of an external item id, or None if the tenant has no such item."""
        if self._index_of is None:
            object.__setattr__(self, "_index_of", {str(x): i for i, x in enumerate(self.items.ids)})
        return self._index_of.get(str(external_id))

    def subset_users(self, user_rows: np.ndarray | list[int], name: str | None = None) -> Tenant:
        """A tenant with the same catalog and only the given users (rows), in the given order."""
        rows = np.asarray(user_rows, dtype=np.int64)
        seqs = [self.sequence(u) for u in rows]
        tss = [self.timestamps[self.offsets[u] : self.offsets[u + 1]] for u in rows]
        return Tenant.from_sequences(
            name or self.name, self.items.ids, self.items.text, self.users[rows], seqs, tss, self.source
        )

    def content_hash(self) -> str:
        """sha256 over catalog ids, text and interactions: identifies the data in manifests."""
        h = hashlib.sha256()
        h.update(self.name.encode())
        for arr in (self.offsets, self.item_index, self.timestamps):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update("\x1f".join(map(str, self.items.ids)).encode())
        h.update("\x1f".join(self.items.text).encode())
        h.update("\x1f".join(map(str, self.users)).encode())
        return h.hexdigest()

    def stats(self) -> dict[str, float]:
        lens = self.lengths()
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
            "avg_len": float(lens.mean()),
            "items_with_text": int(sum(1 for t in self.items.text if t.strip())),
        }
