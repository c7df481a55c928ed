import math

import pytest
import torch

from rlhf.pairs import best_worst_pairs, win_rate


def test_best_against_worst_per_group():
    scores = torch.tensor([0.1, 0.9, 0.5,    # group 0: best row 1, worst row 0
                           0.3, 0.3, 0.3,    # group 1: all tie -> no pair
                           0.2, 0.0, 0.7])   # group 2: best row 8, worst row 7
    assert best_worst_pairs(scores, 3) == [(1, 0), (8, 7)]


def test_non_finite_group_is_skipped():
    scores = torch.tensor([1.0, float("nan"), 0.0, 2.0])
    assert best_worst_pairs(scores, 2) == [(3, 2)]


def test_bad_shapes():
    with pytest.raises(ValueError, match="group_size"):
        best_worst_pairs(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="must be"):
        best_worst_pairs(torch.zeros(5), 2)


def test_win_rate_counts_ties_half_and_skips_invalid():
    # wins: 1 (0.9 > 0.1), tie: 1 (0.5 == 0.5), loss: 1 (0.0 < 0.2), invalid: 1 -> (1 + 0.5 + 0) / 3
    assert win_rate([0.9, 0.5, 0.0, float("nan")], [0.1, 0.5, 0.2, 0.3]) == pytest.approx(0.5)
    assert win_rate([1.0, 1.0], [0.0, 0.0]) == 1.0
    assert math.isnan(win_rate([float("inf")], [0.0]))
    with pytest.raises(ValueError):
        win_rate([1.0], [])
