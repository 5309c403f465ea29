"""Seeded, deterministic train/valid/test splits of a :class:`~rec.data.schema.Tenant`.

Two protocols:

* :func:`leave_one_out` — the standard sequential-recommendation split (SASRec, RecBole): for
  every user with at least 3 items the last item is the test target, the second-last the
  validation target, and everything before is training data.
* :func:`k_shot_split` — the few-shot protocol: a fixed, seeded set of held-out evaluation users,
  and ``K`` training users taken from the rest. For one seed the held-out users are identical for
  every ``K`` and the training users are nested (``K=16`` users are the first 16 of ``K=64``), so
  curves over ``K`` compare like with like.

Example::

    split = k_shot_split(tenant, k_users=64, seed=0)
    rows, histories, targets = split.eval.eval_examples("test", max_users=2000)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rec.data.schema import DataError, Tenant

__all__ = ["MIN_EVAL_LEN", "LOOSplit", "KShotSplit", "leave_one_out", "k_shot_split"]

MIN_EVAL_LEN = 3  # one training item, one validation target, one test target
EvalSplit = Literal["valid", "test"]


@dataclass(frozen=True)
class LOOSplit:
    """Leave-one-out targets for a set of users of ``tenant``.

    Entry ``i`` describes user row ``user_rows[i]`` with sequence ``s`` (length >= 3):
    ``train_seqs[i] = s[:-2]``; validation = (history ``s[:-2]``, target ``s[-2]``); test =
    (history ``s[:-1]``, target ``s[-1]``).

    Attributes:
        tenant: The tenant the rows index into.
        user_rows: ``(U',)`` int64 rows of the evaluated users in ``tenant``, ascending.
        train_seqs: ``U'`` arrays, each user's training prefix ``s[:-2]``.
        valid_targets: ``(U',)`` int64 dense item index ``s[-2]``.
        test_targets: ``(U',)`` int64 dense item index ``s[-1]``.
        short_rows: ``(S,)`` int64 rows of users too short to evaluate (< 3 items); they never
            appear in evaluation, so their whole sequence may be used for training.
    """

    tenant: Tenant
    user_rows: np.ndarray
    train_seqs: list[np.ndarray]
    valid_targets: np.ndarray
    test_targets: np.ndarray
    short_rows: np.ndarray

    def __len__(self) -> int:
        return len(self.user_rows)

    def history(self, i: int, split: EvalSplit) -> np.ndarray:
        """History of entry ``i`` for ``split``: ``s[:-2]`` for valid, ``s[:-1]`` for test."""
        _check_split(split)
        seq = self.tenant.sequence(int(self.user_rows[i]))
        return seq[:-2] if split == "valid" else seq[:-1]

    def sample_indices(self, max_users: int | None = None, seed: int = 0) -> np.ndarray:
        """Entry indices to evaluate: all, or a seeded sample of ``max_users`` (ascending).

        Depends only on ``len(self)``, ``max_users`` and ``seed``, so valid and test (and any two
        models) see the same users.
        """
        n = len(self)
        if max_users is None or max_users >= n:
            return np.arange(n, dtype=np.int64)
        if max_users < 1:
            raise ValueError(f"max_users={max_users} must be >= 1 (or None for all {n} users)")
        return np.sort(np.random.default_rng(seed).choice(n, size=max_users, replace=False)).astype(np.int64)

    def eval_examples(
        self, split: EvalSplit = "test", max_users: int | None = None, seed: int = 0
    ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """Evaluation inputs for ``split``.

        Args:
            split: ``"valid"`` or ``"test"``.
            max_users: Evaluate a seeded sample of this many users (None = all).
            seed: Sampling seed; the same seed gives the same users for valid and test.

        Returns:
            ``(user_rows (E,), histories [E arrays of item indices], targets (E,))`` where
            ``user_rows`` index into ``self.tenant``.

        Raises:
            ValueError: Unknown ``split`` or ``max_users < 1``.
        """
        _check_split(split)
        idx = self.sample_indices(max_users, seed)
        targets = (self.valid_targets if split == "valid" else self.test_targets)[idx]
        histories = [self.history(int(i), split) for i in idx]
        return self.user_rows[idx], histories, targets

    def train_tenant(self, include_short: bool = True, name: str | None = None) -> Tenant:
        """A tenant holding only training data: ``s[:-2]`` per evaluated user (plus, with
        ``include_short``, the full sequences of users too short to evaluate)."""
        t = self.tenant
        rows = list(self.user_rows) + (list(self.short_rows) if include_short else [])
        seqs = list(self.train_seqs) + ([t.sequence(int(u)) for u in self.short_rows] if include_short else [])
        tss = [t.timestamps[t.offsets[u] : t.offsets[u] + len(s)] for u, s in zip(rows, seqs)]
        order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
        return Tenant.from_sequences(
            name or t.name,
            t.items.ids,
            t.items.text,
            t.users[np.asarray(rows, dtype=np.int64)[order]],
            [seqs[i] for i in order],
            [tss[i] for i in order],
            t.source,
        )


@dataclass(frozen=True)
class KShotSplit:
    """A few-shot split: ``K`` training users and a disjoint, fixed set of evaluation users.

    Attributes:
        train: Tenant of the ``K`` training users (same catalog), each sequence truncated to its
            first ``n_first`` interactions when set. User order = ``train_rows`` order.
        train_rows: ``(K,)`` int64 rows of the training users in the source tenant, in the seeded
            permutation order (so a smaller ``K`` is a prefix of a larger one).
        eval: Leave-one-out split over the held-out users (rows into the source tenant). Their
            sequences are never used for training; at evaluation time their earlier items are
            the history the model conditions on.
        k_users: Requested ``K`` (None = all available).
        n_first: Per-user truncation of training sequences (None = full sequences).
        seed: Seed of the user permutation.
    """

    train: Tenant
    train_rows: np.ndarray
    eval: LOOSplit
    k_users: int | None
    n_first: int | None
    seed: int

    @property
    def eval_rows(self) -> np.ndarray:
        """``(E,)`` rows of the held-out evaluation users in the source tenant (ascending)."""
        return self.eval.user_rows

    def eval_examples(
        self, split: EvalSplit = "test", max_users: int | None = None, seed: int = 0
    ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """Shortcut for ``self.eval.eval_examples`` (see :meth:`LOOSplit.eval_examples`)."""
        return self.eval.eval_examples(split, max_users, seed)


def _check_split(split: str) -> None:
    if split not in ("valid", "test"):
        raise ValueError(f"split={split!r}: use 'valid' or 'test'")


def _loo_over_rows(tenant: Tenant, rows: np.ndarray, short_rows: np.ndarray) -> LOOSplit:
    rows = np.asarray(rows, dtype=np.int64)
    seqs = [tenant.sequence(int(u)) for u in rows]
    return LOOSplit(
        tenant=tenant,
        user_rows=rows,
        train_seqs=[s[:-2] for s in seqs],
        valid_targets=np.array([s[-2] for s in seqs], dtype=np.int64),
        test_targets=np.array([s[-1] for s in seqs], dtype=np.int64),
        short_rows=np.asarray(short_rows, dtype=np.int64),
    )


def leave_one_out(tenant: Tenant) -> LOOSplit:
    """Leave-one-out split of every user with at least 3 interactions (no randomness).

    Raises:
        DataError: No user has 3 or more interactions.
    """
    lens = tenant.lengths()
    rows = np.flatnonzero(lens >= MIN_EVAL_LEN)
    if rows.size == 0:
        raise DataError(
            f"tenant {tenant.name!r}: no user has >= {MIN_EVAL_LEN} interactions, so nothing can be "
            "held out for validation and test; supply longer sequences"
        )
    return _loo_over_rows(tenant, rows, np.flatnonzero(lens < MIN_EVAL_LEN))


def _num_eval(eligible: int, num_eval_users: int | None, eval_fraction: float) -> int:
    if num_eval_users is not None:
        if num_eval_users < 1 or num_eval_users > eligible:
            raise ValueError(
                f"num_eval_users={num_eval_users} must be in [1, {eligible}] "
                f"({eligible} users have >= {MIN_EVAL_LEN} interactions)"
            )
        return num_eval_users
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction={eval_fraction} must be in (0, 1), e.g. 0.2")
    return max(1, int(round(eval_fraction * eligible)))


def k_shot_split(
    tenant: Tenant,
    k_users: int | None,
    n_first: int | None = None,
    seed: int = 0,
    num_eval_users: int | None = None,
    eval_fraction: float = 0.2,
) -> KShotSplit:
    """Few-shot split: hold out evaluation users first, then take ``K`` training users.

    One seeded permutation of all users drives both choices. The first ``E`` users in it with at
    least 3 interactions become evaluation users; the remaining users with at least 2
    interactions (one input, one target), in permutation order, are the training pool and the
    first ``k_users`` of them are used. Hence, for a fixed seed, evaluation users do not depend on
    ``k_users`` or ``n_first`` and training users are nested across ``k_users``.

    Args:
        tenant: Source tenant.
        k_users: Number of training users ``K`` (None = the whole pool).
        n_first: Keep only each training user's first ``n_first`` interactions (None = all).
        seed: Permutation seed.
        num_eval_users: Exact number of held-out users ``E``; overrides ``eval_fraction``.
        eval_fraction: ``E = round(eval_fraction * #users with >= 3 interactions)`` (at least 1).

    Returns:
        A :class:`KShotSplit`.

    Raises:
        ValueError: ``k_users`` < 1 or larger than the pool (the message gives the pool size),
            ``n_first`` < 2, or a bad ``num_eval_users`` / ``eval_fraction``.
    """
    if k_users is not None and k_users < 1:
        raise ValueError(f"k_users={k_users} must be >= 1 (or None for all available users)")
    if n_first is not None and n_first < 2:
        raise ValueError(f"n_first={n_first} must be >= 2 (one input item and one target), or None for full sequences")
    lens = tenant.lengths()
    perm = np.random.default_rng(seed).permutation(tenant.num_users)
    eligible = perm[lens[perm] >= MIN_EVAL_LEN]
    n_eval = _num_eval(len(eligible), num_eval_users, eval_fraction)
    eval_rows = eligible[:n_eval]
    is_eval = np.zeros(tenant.num_users, dtype=bool)
    is_eval[eval_rows] = True
    pool = perm[~is_eval[perm] & (lens[perm] >= 2)]
    if pool.size == 0:
        raise ValueError(
            f"tenant {tenant.name!r}: no training users left after holding out {n_eval} evaluation users; "
            "lower num_eval_users/eval_fraction"
        )
    if k_users is not None and k_users > pool.size:
        raise ValueError(
            f"k_users={k_users} but tenant {tenant.name!r} has only {pool.size} training users available "
            f"({tenant.num_users} users, {n_eval} held out for evaluation); use k_users <= {pool.size} or None"
        )
    train_rows = pool if k_users is None else pool[:k_users]
    seqs = [tenant.sequence(int(u))[:n_first] for u in train_rows]
    tss = [tenant.timestamps[tenant.offsets[u] : tenant.offsets[u] + len(s)] for u, s in zip(train_rows, seqs)]
    train = Tenant.from_sequences(
        tenant.name, tenant.items.ids, tenant.items.text, tenant.users[train_rows], seqs, tss, tenant.source
    )
    # Short users are not held out (they sit in the training pool), so short_rows is empty.
    ev = _loo_over_rows(tenant, np.sort(eval_rows), np.zeros(0, dtype=np.int64))
    return KShotSplit(
        train=train, train_rows=train_rows.astype(np.int64), eval=ev, k_users=k_users, n_first=n_first, seed=seed
    )
