"""Left-padding item histories into a dense batch (numpy only: training, export and serving share it).

Convention everywhere: sequences are LEFT-padded with ``PAD = -1`` so the most recent item sits at
the last position.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["PAD", "left_pad"]

PAD = -1


def left_pad(seqs: Sequence[Sequence[int] | np.ndarray], max_len: int, fit_longest: bool = False) -> np.ndarray:
    """Keep the last ``max_len`` items of each sequence and left-pad with ``PAD``.

    Args:
        seqs: B sequences of dense item indices (chronological).
        max_len: Window: at most this many most recent items are kept.
        fit_longest: Make the batch only as wide as its longest (kept) sequence, at least 1, instead
            of always ``max_len`` (serving: shorter batches run faster).

    Returns:
        ``(B, T)`` int64 with ``T = max_len`` (or the longest kept length). An empty sequence becomes
        a row of ``PAD``.
    """
    kept = [np.asarray(s, dtype=np.int64)[-max_len:] if len(s) else np.zeros(0, np.int64) for s in seqs]
    width = max(1, max((len(s) for s in kept), default=0)) if fit_longest else max_len
    out = np.full((len(kept), width), PAD, dtype=np.int64)
    for i, s in enumerate(kept):
        if len(s):
            out[i, width - len(s) :] = s
    return out
