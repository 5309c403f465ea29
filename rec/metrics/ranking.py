"""Full-ranking metrics for next-item recommendation, as pure numpy functions (RecBole style).

Every evaluated user has exactly one relevant item (the held-out next item), so all metrics are
functions of that item's 0-based rank among the candidates:

    rank_of_target          full ranking over the whole catalog (the default; use this)
    sampled_rank_of_target  ranking against ``num_negatives`` uniformly sampled items; metrics
                            computed from it must carry the ``sampled_`` prefix (see
                            :func:`sampled_metrics_from_ranks`) because they overestimate quality
                            (Krichene & Rendle, "On Sampled Metrics for Item Recommendation", KDD 2020)

Example::

    ranks = rank_of_target(scores, targets)            # scores (B, N), targets (B,)
    metrics_from_ranks(ranks, ks=[10])                 # {"hr@10": ..., "ndcg@10": ..., ...}
    metrics_from_ranks(ranks, ks=[10], num_items=N)    # ... plus "auc" (needs the catalog size)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = [
    "TIE_POLICIES",
    "SAMPLED_PREFIX",
    "rank_of_target",
    "sampled_rank_of_target",
    "hit_rate_at_k",
    "ndcg_at_k",
    "mrr_at_k",
    "recall_at_k",
    "auc",
    "metrics_from_ranks",
    "sampled_metrics_from_ranks",
]

TIE_POLICIES = ("optimistic", "pessimistic")
SAMPLED_PREFIX = "sampled_"
TiePolicy = Literal["optimistic", "pessimistic"]


# --- validation -------------------------------------------------------------------------------
def _check_scores_targets(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    targets = np.asarray(targets)
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (B, N), got shape {scores.shape}")
    b, n = scores.shape
    if b == 0:
        raise ValueError("scores is an empty batch (B=0): evaluate at least one user")
    if n == 0:
        raise ValueError("scores has no items (N=0): the catalog must hold at least one item")
    if targets.shape != (b,):
        raise ValueError(f"targets must have shape (B,)=({b},) to match scores {scores.shape}, got {targets.shape}")
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be integer item indices, got dtype {targets.dtype}")
    if targets.min() < 0 or targets.max() >= n:
        raise ValueError(f"targets must lie in [0, {n}) (N={n} items), got min {targets.min()} max {targets.max()}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: fix the model output before ranking (NaN has no rank)")
    return scores, targets.astype(np.int64)


def _check_tie_policy(tie_policy: str) -> None:
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"tie_policy={tie_policy!r}: use one of {TIE_POLICIES}")


def _check_ranks_k(ranks: np.ndarray, k: int) -> np.ndarray:
    ranks = np.asarray(ranks)
    if ranks.ndim != 1:
        raise ValueError(f"ranks must have shape (B,), got shape {ranks.shape}")
    if ranks.size == 0:
        raise ValueError("ranks is empty: a metric over zero users is undefined, evaluate at least one user")
    if not np.issubdtype(ranks.dtype, np.integer) or ranks.min() < 0:
        raise ValueError("ranks must be non-negative integers (0 = the target is ranked first)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return ranks


def _count_above(scores: np.ndarray, target_scores: np.ndarray, tie_policy: str) -> np.ndarray:
    """Per row, how many entries beat the target; (B, M) scores, (B,) target scores -> (B,)."""
    t = target_scores[:, None]
    if tie_policy == "optimistic":
        return (scores > t).sum(axis=1).astype(np.int64)
    return (scores >= t).sum(axis=1).astype(np.int64)


# --- ranks ------------------------------------------------------------------------------------
def rank_of_target(
    scores: np.ndarray,
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None = None,
    tie_policy: TiePolicy = "optimistic",
) -> np.ndarray:
    """0-based rank of each user's target item among all ``N`` catalog items.

    ``rank = #items whose score is strictly greater than the target's`` (``tie_policy=
    "optimistic"``: items tied with the target rank below it). With ``"pessimistic"`` every tied
    item ranks above the target: ``rank = #items with score >= target's, minus the target itself``.
    A constant scorer thus gets rank 0 (optimistic) or ``N-1`` (pessimistic).

    Args:
        scores: ``(B, N)`` higher = more relevant. Not modified.
        targets: ``(B,)`` int dense index of the single relevant item per row.
        exclude: Optional ``B`` arrays of item indices to drop from row ``b``'s ranking (usually the
            user's history). They get ``-inf``; the target itself is never excluded.
        tie_policy: ``"optimistic"`` (default) or ``"pessimistic"``, see above.

    Returns:
        ``(B,)`` int64 ranks in ``[0, N)``.

    Raises:
        ValueError: Empty batch, shape/dtype mismatch, a target outside ``[0, N)``, NaN scores,
            ``len(exclude) != B`` or an unknown ``tie_policy``.
    """
    scores, targets = _check_scores_targets(scores, targets)
    _check_tie_policy(tie_policy)
    b, n = scores.shape
    rows = np.arange(b)
    target_scores = scores[rows, targets].astype(np.float64)
    if exclude is not None:
        if len(exclude) != b:
            raise ValueError(f"exclude has {len(exclude)} entries for a batch of {b}: pass one array per row (or None)")
        scores = scores.astype(np.float64, copy=True)
        for r, ex in enumerate(exclude):
            ex = np.asarray(ex, dtype=np.int64).reshape(-1)
            if ex.size and (ex.min() < 0 or ex.max() >= n):
                raise ValueError(f"exclude[{r}] holds item indices outside [0, {n})")
            scores[r, ex] = -np.inf
        scores[rows, targets] = target_scores
    # The target always satisfies `>=` against itself, hence the -1.
    above = _count_above(scores, target_scores, tie_policy)
    return above if tie_policy == "optimistic" else above - 1


def sampled_rank_of_target(
    scores: np.ndarray,
    targets: np.ndarray,
    num_negatives: int,
    rng: np.random.Generator | int,
    tie_policy: TiePolicy = "optimistic",
) -> np.ndarray:
    """0-based rank of each target among itself plus ``num_negatives`` sampled items.

    Negatives are drawn per row uniformly without replacement from the ``N-1`` items other than
    the target (the user's history is *not* excluded). Metrics from these ranks must be reported
    under ``sampled_*`` names: use :func:`sampled_metrics_from_ranks`.

    Args:
        scores: ``(B, N)`` higher = more relevant.
        targets: ``(B,)`` int dense index of the relevant item per row.
        num_negatives: Negatives per row, in ``[1, N-1]``.
        rng: A numpy ``Generator`` or an int seed (same seed -> same negatives).
        tie_policy: As in :func:`rank_of_target`.

    Returns:
        ``(B,)`` int64 ranks in ``[0, num_negatives]``.

    Raises:
        ValueError: As :func:`rank_of_target`, or ``num_negatives`` outside ``[1, N-1]``.
    """
    scores, targets = _check_scores_targets(scores, targets)
    _check_tie_policy(tie_policy)
    b, n = scores.shape
    if isinstance(num_negatives, bool) or not isinstance(num_negatives, (int, np.integer)):
        raise ValueError(f"num_negatives must be an int, got {num_negatives!r}")
    if not 1 <= num_negatives <= n - 1:
        raise ValueError(f"num_negatives={num_negatives} must be in [1, N-1]=[1, {n - 1}] for a catalog of N={n} items")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    # Sample from [0, N-1) then shift indices >= target up by one: uniform over items != target.
    neg = np.stack([gen.choice(n - 1, size=num_negatives, replace=False) for _ in range(b)])  # (B, M)
    neg += neg >= targets[:, None]
    target_scores = scores[np.arange(b), targets].astype(np.float64)
    neg_scores = np.take_along_axis(scores, neg, axis=1).astype(np.float64)  # (B, M)
    return _count_above(neg_scores, target_scores, tie_policy)


# --- metrics from ranks -----------------------------------------------------------------------
def hit_rate_at_k(ranks: np.ndarray, k: int) -> float:
    """Fraction of users whose target is in the top ``k`` (``rank < k``). ``ranks``: ``(B,)``."""
    ranks = _check_ranks_k(ranks, k)
    return float(np.mean(ranks < k))


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean NDCG@k with one relevant item: ``1 / log2(rank + 2)`` if ``rank < k`` else 0.

    The ideal DCG of a single relevant item is 1, so no normalisation is needed.
    """
    ranks = _check_ranks_k(ranks, k)
    gains = np.where(ranks < k, 1.0 / np.log2(ranks.astype(np.float64) + 2.0), 0.0)
    return float(gains.mean())


def mrr_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean reciprocal rank truncated at ``k``: ``1 / (rank + 1)`` if ``rank < k`` else 0."""
    ranks = _check_ranks_k(ranks, k)
    rr = np.where(ranks < k, 1.0 / (ranks.astype(np.float64) + 1.0), 0.0)
    return float(rr.mean())


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Recall@k. With exactly one relevant item per user this *equals* :func:`hit_rate_at_k`;
    it is reported separately only so tables line up with papers that list both."""
    return hit_rate_at_k(ranks, k)


def auc(ranks: np.ndarray, num_items: int | np.ndarray) -> float:
    """Full-ranking AUC, per user then averaged: ``1 - rank / (N - 1)``.

    With one relevant item the user's AUC is the fraction of the other ``N - 1`` catalog items
    ranked below the target (the probability that a random negative scores lower); ties count as
    in the ranks (optimistic by default). A catalog of one item has no negatives: AUC 1.

    Args:
        ranks: ``(B,)`` 0-based full-ranking ranks (:func:`rank_of_target`; sampled ranks are not
            full ranking and must not be passed here).
        num_items: Catalog size ``N``, one int or ``(B,)`` per user (users of different tenants).

    Raises:
        ValueError: Empty or negative ranks, a rank >= its ``N``, or ``N < 1``.
    """
    ranks = _check_ranks_k(ranks, 1)
    n = np.broadcast_to(np.asarray(num_items, dtype=np.int64), ranks.shape)
    if n.min() < 1:
        raise ValueError(f"num_items must be >= 1 (the catalog size), got {n.min()}")
    if (ranks >= n).any():
        raise ValueError("a rank is >= its catalog size num_items: pass the size of the catalog the ranks are over")
    negatives = (n - 1).astype(np.float64)
    per_user = np.where(negatives > 0, 1.0 - ranks / np.maximum(negatives, 1.0), 1.0)
    return float(per_user.mean())


_METRICS = (("hr", hit_rate_at_k), ("ndcg", ndcg_at_k), ("mrr", mrr_at_k), ("recall", recall_at_k))


def metrics_from_ranks(
    ranks: np.ndarray, ks: Sequence[int] = (5, 10, 20), prefix: str = "", num_items: int | np.ndarray | None = None
) -> dict[str, float]:
    """All metrics at every cut-off, keyed ``"{prefix}{name}@{k}"``, plus ``"{prefix}auc"``.

    Args:
        ranks: ``(B,)`` 0-based target ranks from :func:`rank_of_target`.
        ks: Cut-offs, e.g. ``[5, 10, 20]``.
        prefix: Prepended to every key; use :func:`sampled_metrics_from_ranks` for sampled ranks.
        num_items: Catalog size (int, or ``(B,)`` per user) of full-ranking ranks: adds ``"auc"``
            (:func:`auc`). ``None``: no AUC (it needs the catalog size).

    Returns:
        ``{"hr@5", "ndcg@5", "mrr@5", "recall@5", "hr@10", ..., "auc"}`` -> float means over users.

    Raises:
        ValueError: Empty ``ranks`` or ``ks``, or a ``k < 1``.
    """
    ks = list(ks)
    if not ks:
        raise ValueError("ks is empty: pass at least one cut-off, e.g. ks=[10]")
    out: dict[str, float] = {}
    for k in ks:
        for name, fn in _METRICS:
            out[f"{prefix}{name}@{k}"] = fn(ranks, k)
    if num_items is not None:
        out[f"{prefix}auc"] = auc(ranks, num_items)
    return out


def sampled_metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = (5, 10, 20)) -> dict[str, float]:
    """:func:`metrics_from_ranks` for :func:`sampled_rank_of_target` ranks: keys ``"sampled_ndcg@10"`` etc."""
    return metrics_from_ranks(ranks, ks, prefix=SAMPLED_PREFIX)
