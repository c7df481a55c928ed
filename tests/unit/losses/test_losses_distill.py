"""Distillation divergences against hand-computed values (two- and three-token vocabularies)."""
from __future__ import annotations

import math

import pytest
import torch

from rlhf.losses.distill import (distill_loss, forward_kl, generalized_jsd, reverse_kl, softened_logprobs,
                                 token_divergence)

# Teacher T = (0.5, 0.5), student S = (0.25, 0.75) over a 2-token vocabulary.
T = torch.tensor([0.5, 0.5]).log()
S = torch.tensor([0.25, 0.75]).log()


def test_forward_and_reverse_kl_by_hand():
    # KL(T||S) = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln 2 + 0.5 ln(2/3) = 0.5 ln(4/3) = 0.143841
    assert float(forward_kl(S, T)) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    # KL(S||T) = 0.25 ln(0.25/0.5) + 0.75 ln(0.75/0.5) = -0.25 ln 2 + 0.75 ln 1.5 = 0.130812
    assert float(reverse_kl(S, T)) == pytest.approx(-0.25 * math.log(2) + 0.75 * math.log(1.5), abs=1e-6)
    assert float(forward_kl(T, T)) == 0.0 and float(reverse_kl(S, S)) == 0.0


def test_jsd_half_by_hand():
    # beta = 0.5: M = (0.375, 0.625)
    # KL(T||M) = 0.5 ln(0.5/0.375) + 0.5 ln(0.5/0.625) = 0.5 ln(4/3) + 0.5 ln(0.8) = 0.032269
    # KL(S||M) = 0.25 ln(0.25/0.375) + 0.75 ln(0.75/0.625) = 0.25 ln(2/3) + 0.75 ln(1.2) = 0.035372
    # JSD = 0.5 * 0.032269 + 0.5 * 0.035372 = 0.033820
    kl_tm = 0.5 * math.log(4 / 3) + 0.5 * math.log(0.8)
    kl_sm = 0.25 * math.log(2 / 3) + 0.75 * math.log(1.2)
    assert float(generalized_jsd(S, T, 0.5)) == pytest.approx(0.5 * kl_tm + 0.5 * kl_sm, abs=1e-6)
    # Symmetric at 0.5, bounded by ln 2, and 0 for identical distributions.
    assert float(generalized_jsd(T, S, 0.5)) == pytest.approx(float(generalized_jsd(S, T, 0.5)), abs=1e-7)
    assert float(generalized_jsd(S, S, 0.5)) == pytest.approx(0.0, abs=1e-7)


def test_jsd_with_unequal_beta_by_hand_three_tokens():
    # T = (0.7, 0.2, 0.1), S = (0.1, 0.3, 0.6), beta = 0.25: M = 0.25 T + 0.75 S = (0.25, 0.275, 0.475)
    t, s = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.1, 0.3, 0.6])
    m = [0.25, 0.275, 0.475]
    kl_tm = sum(ti * math.log(ti / mi) for ti, mi in zip([0.7, 0.2, 0.1], m))  # 0.7 ln 2.8 + 0.2 ln(0.727) + 0.1 ln(0.2105)
    kl_sm = sum(si * math.log(si / mi) for si, mi in zip([0.1, 0.3, 0.6], m))
    assert float(generalized_jsd(s.log(), t.log(), 0.25)) == pytest.approx(0.25 * kl_tm + 0.75 * kl_sm, abs=1e-6)


def test_jsd_limits_relate_to_the_two_kls():
    # JSD(beta)/beta -> KL(T||S) as beta -> 0; JSD(beta)/(1-beta) -> KL(S||T) as beta -> 1.
    s64, t64 = S.double(), T.double()
    small = 1e-5
    assert float(generalized_jsd(s64, t64, small)) / small == pytest.approx(float(forward_kl(s64, t64)), rel=1e-3)
    assert float(generalized_jsd(s64, t64, 1 - small)) / small == pytest.approx(float(reverse_kl(s64, t64)), rel=1e-3)
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(S, T, 0.0)


def test_temperature_softens_both_and_accepts_logprobs_as_logits():
    logits = torch.tensor([2.0, 0.0])
    # At T = 2: softmax((1, 0)) = (e/(e+1), 1/(e+1)) = (0.731059, 0.268941)
    assert softened_logprobs(logits, 2.0).exp().tolist() == pytest.approx([0.731059, 0.268941], abs=1e-6)
    # Log-probs differ from logits by a constant, so they soften to the same distribution.
    assert torch.allclose(softened_logprobs(torch.log_softmax(logits, -1), 2.0), softened_logprobs(logits, 2.0))


def test_loss_is_the_token_mean_over_the_mask_with_finite_gradients():
    # Two rows of two positions; the last position of row 1 is padding (its divergence must not count).
    student = torch.stack([S, S]).expand(2, 2, 2).clone().requires_grad_(True)  # [B=2, R=2, V=2] logits = log-probs
    teacher = torch.stack([T, T]).expand(2, 2, 2).clone()
    teacher[1, 1] = S  # padding position: here student == teacher would pull the mean down if counted
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, stats = distill_loss(student, teacher, mask, "forward_kl")
    assert float(loss.detach()) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)  # every counted position is KL(T||S)
    assert stats.tokens == 3
    assert stats.forward_kl == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    assert stats.reverse_kl == pytest.approx(-0.25 * math.log(2) + 0.75 * math.log(1.5), abs=1e-6)
    for divergence in ("forward_kl", "reverse_kl", "jsd"):
        student.grad = None
        loss, _ = distill_loss(student, teacher, mask, divergence, beta=0.3, temperature=1.5)
        loss.backward()
        assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
        assert float(student.grad[1, 1].abs().sum()) == 0.0  # padding gets no gradient


def test_empty_mask_gives_zero_and_shape_mismatch_is_an_error():
    student = torch.zeros(1, 2, 3, requires_grad=True)
    loss, stats = distill_loss(student, torch.zeros(1, 2, 3), torch.zeros(1, 2), "jsd")
    assert float(loss.detach()) == 0.0 and stats.tokens == 0
    loss.backward()
    assert torch.isfinite(student.grad).all()
    with pytest.raises(ValueError, match="same tokenizer"):
        token_divergence(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), "forward_kl")
    with pytest.raises(ValueError, match="unknown divergence"):
        token_divergence(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), "tvd")
