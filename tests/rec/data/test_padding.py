"""left_pad: the one padding rule of training, export and serving."""

import numpy as np

from rec.data.padding import PAD, left_pad


def test_fixed_window_keeps_the_most_recent_items():
    out = left_pad([[1, 2, 3, 4], [5], []], 3)
    assert out.dtype == np.int64 and out.tolist() == [[2, 3, 4], [PAD, PAD, 5], [PAD, PAD, PAD]]


def test_fit_longest_is_as_wide_as_the_longest_kept_history():
    assert left_pad([np.array([7, 8]), np.array([9])], 50, fit_longest=True).tolist() == [[7, 8], [PAD, 9]]
    assert left_pad([[1, 2, 3, 4]], 2, fit_longest=True).tolist() == [[3, 4]]
    assert left_pad([[]], 5, fit_longest=True).tolist() == [[PAD]]
