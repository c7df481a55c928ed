import math

import pytest
import torch

from rlhf.losses import bradley_terry_loss

SP = lambda x: math.log(1 + math.exp(x))  # noqa: E731  softplus, i.e. -log sigma(-x)


def test_bradley_terry_hand_values():
    chosen = torch.tensor([2.0, 0.0, 1.0])
    rejected = torch.tensor([1.0, 1.0, 1.0])
    loss, acc = bradley_terry_loss(chosen, rejected)
    # diffs 1, -1, 0: (log(1+e^-1) + log(1+e) + log 2) / 3 = 0.77322352
    assert loss.item() == pytest.approx((SP(-1) + SP(1) + SP(0)) / 3, rel=1e-6)
    assert acc.item() == pytest.approx(1 / 3)  # the tie counts as wrong


def test_bradley_terry_margin():
    chosen = torch.tensor([2.0, 3.0])
    rejected = torch.tensor([1.0, 1.0])
    loss, acc = bradley_terry_loss(chosen, rejected, margin=torch.tensor([1.0, 0.5]))
    # logits 2-1-1 = 0 and 3-1-0.5 = 1.5
    assert loss.item() == pytest.approx((SP(0) + SP(-1.5)) / 2, rel=1e-6)
    assert acc.item() == 1.0
    loss_scalar, _ = bradley_terry_loss(chosen, rejected, margin=1.0)
    assert loss_scalar.item() == pytest.approx((SP(0) + SP(-1)) / 2, rel=1e-6)


def test_bradley_terry_gradient_and_shape_check():
    chosen = torch.tensor([0.0], requires_grad=True)
    loss, acc = bradley_terry_loss(chosen, torch.tensor([0.0]))
    loss.backward()
    assert chosen.grad.item() == pytest.approx(-0.5)  # -sigma(-0)
    assert not acc.requires_grad
    with pytest.raises(ValueError):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))


def test_bradley_terry_large_scores_finite():
    loss, _ = bradley_terry_loss(torch.tensor([-1000.0]), torch.tensor([1000.0]))
    assert loss.item() == pytest.approx(2000.0)
