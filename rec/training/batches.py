"""Turning item sequences into padded tensors.

Sequences are LEFT-padded with ``PAD = -1`` (``rec.data.padding.left_pad``); training targets use
``IGNORE = -100`` (``F.cross_entropy``'s ignore index).
"""

from __future__ import annotations

import numpy as np

from rec.data.padding import PAD, left_pad

__all__ = ["PAD", "IGNORE", "next_item_examples", "shard_rows"]

IGNORE = -100


def next_item_examples(seqs: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """SASRec training pairs: input ``s[:-1]``, target ``s[1:]``, last ``max_len`` steps.

    Returns:
        inputs ``(R, T)`` with ``PAD``, targets ``(R, T)`` with ``IGNORE``; one row per sequence of
        length >= 2 (shorter ones carry no next-item signal and are skipped).
    """
    usable = [np.asarray(s) for s in seqs if len(s) >= 2]
    inputs = left_pad([s[:-1] for s in usable], max_len)
    targets = left_pad([s[1:] for s in usable], max_len)
    targets[targets == PAD] = IGNORE
    return inputs, targets


def shard_rows(num_rows: int, epoch: int, seed: int, rank: int, world_size: int) -> np.ndarray:
    """This rank's rows for one epoch: a seeded global permutation, strided by rank.

    Like ``DistributedSampler``: every rank sees a disjoint, equally sized slice (the permutation is
    padded by wrapping around), and the assignment depends only on (seed, epoch, rank, world size),
    never on node layout, so a run is reproducible across clusters.
    """
    perm = np.random.default_rng([seed, epoch]).permutation(num_rows)
    per_rank = -(-num_rows // world_size)
    if per_rank * world_size > num_rows:
        perm = np.concatenate([perm, perm[: per_rank * world_size - num_rows]])
    return perm[rank::world_size]
