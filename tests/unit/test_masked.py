import math

import torch

from rlhf.masked import masked_mean, masked_sum, masked_var, masked_whiten

X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])


def test_masked_sum_all_and_dim():
    assert masked_sum(X, M).item() == 3.0  # 1 + 2
    assert torch.equal(masked_sum(X, M, dim=-1), torch.tensor([3.0, 0.0]))
    assert torch.equal(masked_sum(X, M, dim=0), torch.tensor([1.0, 2.0, 0.0]))


def test_masked_mean_empty_rows_are_zero_not_nan():
    assert masked_mean(X, M).item() == 1.5  # (1 + 2) / 2
    assert torch.equal(masked_mean(X, M, dim=-1), torch.tensor([1.5, 0.0]))
    assert masked_mean(X, torch.zeros_like(M)).item() == 0.0


def test_bool_and_float_masks_agree():
    assert torch.equal(masked_mean(X, M, dim=1), masked_mean(X, M.bool(), dim=1))


def test_nan_in_masked_positions_does_not_leak():
    x = X.clone()
    x[0, 2] = float("nan")
    x[1] = float("inf")
    assert masked_sum(x, M).item() == 3.0
    assert torch.equal(masked_mean(x, M, dim=1), torch.tensor([1.5, 0.0]))
    assert torch.isfinite(masked_whiten(x, M)).all()


def test_masked_mean_grad_finite_on_all_masked():
    x = X.clone().requires_grad_(True)
    masked_mean(x, torch.zeros_like(M), dim=1).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(X))


def test_masked_var_hand_values():
    x = torch.tensor([[1.0, 2.0, 99.0], [4.0, -7.0, -7.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # selected 1, 2, 4: mean 7/3; squared deviations 16/9 + 1/9 + 25/9 = 42/9
    assert math.isclose(masked_var(x, m).item(), (42 / 9) / 2, rel_tol=1e-6)
    assert math.isclose(masked_var(x, m, unbiased=False).item(), (42 / 9) / 3, rel_tol=1e-6)


def test_masked_var_degenerate_selections():
    one = torch.tensor([[0.0, 1.0, 0.0]])
    assert masked_var(X[:1], one).item() == 0.0  # n - 1 = 0
    assert masked_var(X[:1], one, unbiased=False).item() == 0.0
    assert masked_var(X, torch.zeros_like(M)).item() == 0.0


def test_masked_whiten_hand_values():
    x = torch.tensor([[1.0, 5.0, 123.0]])
    m = torch.tensor([[1.0, 1.0, 0.0]])
    # mean 3, population variance ((-2)^2 + 2^2) / 2 = 4, std 2
    w = masked_whiten(x, m)
    assert torch.allclose(w, torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-6)
    w_keep_mean = masked_whiten(x, m, shift_mean=False)
    assert torch.allclose(w_keep_mean, torch.tensor([[2.0, 4.0, 0.0]]), atol=1e-6)


def test_masked_whiten_all_masked_and_single_token():
    assert torch.equal(masked_whiten(X, torch.zeros_like(M)), torch.zeros_like(X))
    single = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    # one token: x - mean = 0, variance 0 -> 0 rather than NaN
    assert torch.equal(masked_whiten(X, single), torch.zeros_like(X))
