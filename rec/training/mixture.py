"""Domain-balanced batches: every batch draws each source tenant at a configured proportion.

With the natural mixture (``shard_rows``) a batch holds each tenant in proportion to its number of
training rows, so the largest source dominates both the gradient and, for in-batch objectives, the
negatives. Here each batch of ``B`` rows takes ``round(B * w_t / sum(w))`` rows of tenant ``t``
(largest-remainder rounding, so the counts add up to ``B``), read from a per-tenant stream of seeded
permutations: a small tenant is cycled (a new permutation each pass), a large one is sub-sampled.

Reference: Y. Hou et al., UniSRec (KDD 2022): in-batch negatives mixed across all source domains.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rec.training.batches import shard_rows

__all__ = ["batch_counts", "balanced_rows", "epoch_rows"]


def batch_counts(weights: np.ndarray, batch_size: int) -> np.ndarray:
    """Rows per tenant in one batch: ``batch_size * w / sum(w)``, largest remainders rounded up.

    Raises:
        ValueError: A negative weight, or all weights zero.
    """
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"domain weights must be >= 0 with a positive sum, got {w.tolist()}")
    exact = batch_size * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    short = batch_size - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


def _stream(num_rows: int, need: int, rng: np.random.Generator) -> np.ndarray:
    """``need`` row ids from concatenated fresh permutations of ``range(num_rows)``."""
    passes = -(-need // num_rows)
    return np.concatenate([rng.permutation(num_rows) for _ in range(passes)])[:need]


def balanced_rows(
    rows_per_tenant: list[int], weights: np.ndarray, batch_size: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1
) -> np.ndarray:
    """This rank's global training rows for one epoch, in batches of fixed tenant proportions.

    Consecutive slices of ``batch_size`` are the batches (``iterate_batches`` cuts them so). The
    epoch has ``ceil(total_rows / (batch_size * world_size))`` batches per rank, the natural
    epoch's length. Rows are global ids as in ``Corpus.row_index`` (tenants concatenated in order).

    Args:
        rows_per_tenant: Training rows of each tenant.
        weights: ``(num_tenants,)`` relative share of each tenant in every batch (tenants with
            no rows get none).
        batch_size: Rows per batch.
        epoch, seed, rank, world_size: The draw depends only on these (reproducible across clusters).

    Returns:
        ``(num_batches * batch_size,)`` int64 global row ids.
    """
    sizes = np.asarray(rows_per_tenant, dtype=np.int64)
    w = np.where(sizes > 0, np.asarray(weights, dtype=np.float64), 0.0)
    counts = batch_counts(w, batch_size)
    num_batches = -(-int(sizes.sum()) // (batch_size * world_size))
    rng = np.random.default_rng([seed, epoch, rank, world_size])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    per_tenant = [starts[t] + _stream(int(sizes[t]), int(counts[t]) * num_batches, rng) if counts[t] else np.zeros(0, np.int64)
                  for t in range(len(sizes))]
    batches = [np.concatenate([p[b * c : (b + 1) * c] for p, c in zip(per_tenant, counts)]) for b in range(num_batches)]
    return np.concatenate(batches).astype(np.int64) if batches else np.zeros(0, np.int64)


def epoch_rows(corpus: Any, tc: Any, epoch: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """This rank's training rows of one epoch for a ``Corpus`` and a ``TrainConfig``: the natural
    mixture (``shard_rows``: a seeded permutation of every row) or, with ``train.mixture=balanced``,
    batches of ``train.batch_size`` rows in fixed per-tenant shares (``train.mixture_weights``)."""
    if tc.mixture == "natural":
        return shard_rows(corpus.num_train_rows, epoch, tc.seed, rank, world_size)
    weights = [tc.mixture_weights.get(t.name, 1.0) for t in corpus.tenants]
    return balanced_rows([len(t.train_inputs) for t in corpus.tenants], weights, tc.batch_size, epoch, tc.seed, rank, world_size)
