import math

import pytest
import torch

from rlhf.losses import DPO_LOSS_TYPES, dpo_loss

# pi_c = -1, pi_r = -3, ref_c = ref_r = -2 -> h = (1) - (-1) = 2
PC, PR, RC, RR = (torch.tensor([v], dtype=torch.float64) for v in (-1.0, -3.0, -2.0, -2.0))
LOG1PE = math.log(1 + math.e)  # -log sigma(-1)
LOG1PEINV = math.log(1 + math.exp(-1))  # -log sigma(1)


def test_loss_type_table():
    assert set(DPO_LOSS_TYPES) == {"sigmoid", "cdpo", "ipo", "simpo"}


def test_sigmoid_hand_values():
    losses, cr, rr = dpo_loss(PC, PR, RC, RR, beta=0.5)
    # beta * h = 1 -> log(1 + e^-1) = 0.31326169
    assert losses.item() == pytest.approx(LOG1PEINV, rel=1e-12)
    assert cr.item() == pytest.approx(0.5) and rr.item() == pytest.approx(-0.5)


@pytest.mark.parametrize("loss_type", ["sigmoid", "cdpo"])
def test_label_smoothing_hand_values(loss_type):
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type=loss_type, label_smoothing=0.1)
    # 0.9 * log(1 + e^-1) + 0.1 * log(1 + e) = 0.28193552 + 0.13132617
    assert losses.item() == pytest.approx(0.9 * LOG1PEINV + 0.1 * LOG1PE, rel=1e-12)
    assert losses.item() == pytest.approx(0.41326169, abs=1e-8)


def test_cdpo_requires_smoothing():
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type="cdpo")


def test_ipo_hand_values():
    # beta 0.5: (2 - 1/(2*0.5))^2 = 1 ; beta 0.25: (2 - 2)^2 = 0
    assert dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type="ipo")[0].item() == pytest.approx(1.0)
    assert dpo_loss(PC, PR, RC, RR, beta=0.25, loss_type="ipo")[0].item() == pytest.approx(0.0)
    with pytest.raises(ValueError):
        dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type="ipo", label_smoothing=0.1)


def test_simpo_hand_values_without_reference():
    pc = torch.tensor([-4.0], dtype=torch.float64)
    pr = torch.tensor([-9.0], dtype=torch.float64)
    losses, cr, rr = dpo_loss(
        pc, pr, None, None, beta=2.0, loss_type="simpo",
        chosen_lengths=torch.tensor([2]), rejected_lengths=torch.tensor([3]), simpo_gamma=0.5,
    )
    # 2 * (-4/2 - -9/3) - 0.5 = 1.5 -> log(1 + e^-1.5) = 0.20141327
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-1.5)), rel=1e-12)
    assert cr.item() == pytest.approx(-4.0) and rr.item() == pytest.approx(-6.0)


def test_simpo_requires_lengths():
    with pytest.raises(ValueError, match="chosen_lengths"):
        dpo_loss(PC, PR, None, None, beta=2.0, loss_type="simpo", rejected_lengths=torch.tensor([1]))
    with pytest.raises(ValueError, match="rejected_lengths"):
        dpo_loss(PC, PR, None, None, beta=2.0, loss_type="simpo", chosen_lengths=torch.tensor([1]))


def test_errors():
    with pytest.raises(ValueError, match="sigmoid.*cdpo.*ipo.*simpo"):
        dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type="kto")
    with pytest.raises(ValueError, match="reference"):
        dpo_loss(PC, PR, None, None, beta=0.5)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(PC, PR, RC, RR, beta=0.0)


def test_gradients_and_detached_rewards():
    pc = torch.tensor([-1.0, -5.0], requires_grad=True)
    pr = torch.tensor([-3.0, -2.0], requires_grad=True)
    ref = torch.tensor([-2.0, -2.0])
    losses, cr, rr = dpo_loss(pc, pr, ref, ref, beta=0.5)
    assert losses.shape == (2,) and not cr.requires_grad and not rr.requires_grad
    losses.sum().backward()
    # d/dpi_c of -log sigma(beta h) = -beta * sigma(-beta h); row 0: beta h = 1
    assert pc.grad[0].item() == pytest.approx(-0.5 / (1 + math.e), rel=1e-6)
    assert pr.grad[0].item() == pytest.approx(0.5 / (1 + math.e), rel=1e-6)


def test_extreme_margins_are_finite():
    pc = torch.tensor([0.0, -2000.0])
    pr = torch.tensor([-2000.0, 0.0])
    ref = torch.zeros(2)
    losses, _, _ = dpo_loss(pc, pr, ref, ref, beta=1.0)
    assert torch.isfinite(losses).all()
    assert losses[0].item() == pytest.approx(0.0, abs=1e-6)
    assert losses[1].item() == pytest.approx(2000.0)
