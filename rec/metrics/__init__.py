"""Ranking metrics: pure numpy, full-ranking by default; sampled metrics carry ``sampled_`` in their names."""

from rec.metrics.baselines import popularity_metrics, uniform_metrics
from rec.metrics.ranking import (
    SAMPLED_PREFIX,
    TIE_POLICIES,
    auc,
    hit_rate_at_k,
    metrics_from_ranks,
    mrr_at_k,
    ndcg_at_k,
    rank_of_target,
    recall_at_k,
    sampled_metrics_from_ranks,
    sampled_rank_of_target,
)

__all__ = [
    "SAMPLED_PREFIX",
    "TIE_POLICIES",
    "auc",
    "hit_rate_at_k",
    "metrics_from_ranks",
    "mrr_at_k",
    "ndcg_at_k",
    "popularity_metrics",
    "rank_of_target",
    "recall_at_k",
    "sampled_metrics_from_ranks",
    "sampled_rank_of_target",
    "uniform_metrics",
]
