"""Reference rankings every benchmark compares against: popularity and a uniformly random ranking."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rec.metrics.ranking import metrics_from_ranks, rank_of_target

__all__ = ["popularity_metrics", "uniform_metrics"]


def popularity_metrics(
    counts: np.ndarray, targets: np.ndarray, ks: Sequence[int] = (10,), tie_seed: int | None = None, batch: int = 2048
) -> dict[str, float]:
    """Full-ranking metrics of ranking every user's candidates by item popularity.

    Args:
        counts: ``(N,)`` item counts (e.g. over the training sequences).
        targets: ``(V,)`` dense index of each evaluated user's held-out item.
        ks: Cut-offs.
        tie_seed: None = ties optimistic (like every model's evaluation); a seed = ties broken by a
            seeded random order, so a tiny training set's many zero counts do not rank the target
            first (a fair baseline at small K).
        batch: Users ranked at once (bounds memory to ``batch x N``).
    """
    scores = np.asarray(counts, np.float64)  # (N,)
    if tie_seed is not None:
        scores = scores + np.random.default_rng(tie_seed).random(len(scores)) * 0.5  # < 1: only breaks ties
    targets = np.asarray(targets, np.int64)
    ranks = [rank_of_target(np.broadcast_to(scores, (len(targets[s : s + batch]), len(scores))), targets[s : s + batch])
             for s in range(0, len(targets), batch)]
    return metrics_from_ranks(np.concatenate(ranks) if ranks else np.zeros(0, np.int64), ks=list(ks))


def uniform_metrics(n_items: int, k: int = 10) -> dict[str, float]:
    """Exact expected HR@k / NDCG@k of a uniformly random ranking of ``n_items`` items."""
    top = min(k, n_items)
    return {f"hr@{k}": top / n_items, f"ndcg@{k}": float(sum(1.0 / np.log2(r + 2.0) for r in range(top)) / n_items)}
