"""Hand-worked numbers for the policy-gradient menu: aggregation modes, importance weights,
asymmetric clipping, GSPO ratios, the overlong penalty and KL as a loss term."""
import math

import pytest
import torch

from rlhf.losses import (
    aggregate,
    importance_weights,
    kl_loss_matrix,
    loss_denominator,
    loss_numerator,
    mismatch_stats,
    overlong_penalty,
    ppo_policy_loss,
    truncated_rows,
)

NAN = float("nan")

# ---------------------------------------------------------------- aggregation
# Row 0: three tokens 1, 2, 3; row 1: one token 4 (a length-1 response); row 2: all masked, NaN garbage.
LOSS = [[1.0, 2.0, 3.0], [4.0, NAN, NAN], [NAN, NAN, NAN]]
MASK = [[1, 1, 1], [1, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize("mode, expected", [
    ("token_mean", 2.5),                       # (1 + 2 + 3 + 4) / 4 tokens
    ("seq_mean_token_mean", 3.0),              # (6/3 + 4/1) / 2 rows with tokens
    ("seq_mean_token_sum", 5.0),               # (6 + 4) / 2 rows with tokens
    ("seq_mean_token_sum_norm", 10.0 / 12.0),  # (6 + 4) / (B=3 rows * norm_len=4)
])
def test_aggregate_hand_values_ignore_padding_and_empty_rows(mode, expected):
    loss = torch.tensor(LOSS, dtype=torch.float64, requires_grad=True)
    out = aggregate(loss, torch.tensor(MASK), mode, norm_len=4)
    assert out.item() == pytest.approx(expected, abs=1e-12)
    out.backward()
    assert torch.isfinite(loss.grad).all() and (loss.grad[2] == 0).all() and loss.grad[1, 1:].eq(0).all()


def test_aggregate_gradients_weigh_tokens_as_the_mode_says():
    loss = torch.tensor(LOSS, dtype=torch.float64, requires_grad=True)
    aggregate(loss, torch.tensor(MASK), "seq_mean_token_mean").backward()
    # Row 0's tokens: 1/3 of a sequence each, / 2 sequences = 1/6; row 1's lone token: 1/2.
    assert loss.grad[0].tolist() == pytest.approx([1 / 6] * 3) and loss.grad[1, 0].item() == pytest.approx(0.5)


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"])
def test_aggregate_all_masked_batch_is_zero_with_finite_gradient(mode):
    loss = torch.full((2, 3), NAN, dtype=torch.float64, requires_grad=True)
    out = aggregate(loss, torch.zeros(2, 3), mode, norm_len=3)
    assert out.item() == 0.0
    out.backward()
    assert (loss.grad == 0).all()


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"])
def test_parts_over_the_whole_batch_denominator_add_up_to_the_batch(mode):
    loss, mask = torch.tensor(LOSS, dtype=torch.float64), torch.tensor(MASK)
    whole = aggregate(loss, mask, mode, norm_len=4)
    den = loss_denominator(mask, mode, norm_len=4)
    parts = sum(loss_numerator(loss[i:i + 1], mask[i:i + 1], mode) / den for i in range(3))
    assert parts.item() == pytest.approx(whole.item(), abs=1e-12)


def test_aggregate_rejects_unknown_mode_and_missing_norm_len():
    with pytest.raises(ValueError, match="seq_mean"):
        aggregate(torch.zeros(1, 1), torch.ones(1, 1), "sequence_mean")
    with pytest.raises(ValueError, match="norm_len"):
        aggregate(torch.zeros(1, 1), torch.ones(1, 1), "seq_mean_token_sum_norm")


# ---------------------------------------------------------------- importance weights
# log(old) - log(rollout): row 0 = +0.5, -1.0, 0.0 (sum -0.5); row 1 = +1.0 (length 1); row 2 all masked.
OLD = [[-1.0, -2.0, -0.5], [-1.0, NAN, NAN], [NAN, 5.0, 5.0]]
ROLLOUT = [[-1.5, -1.0, -0.5], [-2.0, NAN, NAN], [NAN, -50.0, -50.0]]
E = math.exp


@pytest.mark.parametrize("mode, expected", [
    ("none", [[1, 1, 1], [1, 0, 0], [0, 0, 0]]),
    # min(e^0.5 = 1.649, 1.5), e^-1, e^0; row 1: min(e^1, 1.5)
    ("tis", [[1.5, E(-1), 1.0], [1.5, 0, 0], [0, 0, 0]]),
    # e^0.5 > 1.5 -> 0; e^1 > 1.5 -> 0
    ("mis", [[0.0, E(-1), 1.0], [0.0, 0, 0], [0, 0, 0]]),
    # row 0: e^(0.5 - 1 + 0) = e^-0.5 on every token; row 1: min(e^1, 1.5)
    ("seq_tis", [[E(-0.5)] * 3, [1.5, 0, 0], [0, 0, 0]]),
    ("seq_mis", [[E(-0.5)] * 3, [0.0, 0, 0], [0, 0, 0]]),
])
def test_importance_weights_hand_values(mode, expected):
    old = torch.tensor(OLD, dtype=torch.float64, requires_grad=True)
    w = importance_weights(old, torch.tensor(ROLLOUT, dtype=torch.float64), torch.tensor(MASK), mode, cap=1.5)
    assert not w.requires_grad
    assert torch.allclose(w, torch.tensor(expected, dtype=torch.float64), atol=1e-12), w


def test_mismatch_stats_hand_values():
    stats = mismatch_stats(torch.tensor(OLD, dtype=torch.float64), torch.tensor(ROLLOUT, dtype=torch.float64),
                           torch.tensor(MASK), "tis", cap=1.5)
    # k3 with r = rollout - old = -0.5, +1, 0, -1: e^r - 1 - r = 0.10653, 0.71828, 0, 0.36788 -> mean of 4
    k3 = [E(r) - 1 - r for r in (-0.5, 1.0, 0.0, -1.0)]
    assert stats.mismatch_kl.item() == pytest.approx(sum(k3) / 4, abs=1e-12)
    assert stats.is_weight_mean.item() == pytest.approx((1.5 + E(-1) + 1.0 + 1.5) / 4, abs=1e-12)
    assert stats.is_clipped_frac.item() == pytest.approx(2 / 4)  # the two weights the cap truncated
    none = mismatch_stats(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), "none")
    assert none.mismatch_kl.item() == 0.0 and none.is_weight_mean.item() == 1.0 and none.is_clipped_frac.item() == 0.0


def test_importance_weights_multiply_the_token_losses():
    # Two tokens on policy (r = 1), A = 1 and 2, weights 0.5 and 1.5: loss = -(0.5*1 + 1.5*2) / 2 = -1.75
    lp = torch.zeros(1, 2)
    loss, _ = ppo_policy_loss(lp, lp, torch.tensor([[1.0, 2.0]]), torch.ones(1, 2), 0.2,
                              weights=torch.tensor([[0.5, 1.5]]))
    assert loss.item() == pytest.approx(-1.75)


# ---------------------------------------------------------------- asymmetric clipping and GSPO
RATIOS = [1.5, 0.5, 0.5, 1.1]
ADV = [1.0, 1.0, -2.0, -1.0]


def _policy_inputs():
    old = torch.tensor([[-1.0, -2.0, -0.5, -1.5, -3.0]], dtype=torch.float64)
    log_r = torch.tensor([[math.log(x) for x in RATIOS] + [100.0]], dtype=torch.float64)
    return (old + log_r).requires_grad_(True), old, torch.tensor([ADV + [5.0]], dtype=torch.float64), \
        torch.tensor([[1, 1, 1, 1, 0]])


def test_clip_higher_hand_values():
    # ε_low 0.2, ε_high 0.28:
    #   a: r=1.5, A=+1 -> clip to 1.28 -> min 1.28 (clipped), term -1.28
    #   b: r=0.5, A=+1 -> 0.5 < 0.8 -> term -0.5
    #   c: r=0.5, A=-2 -> clip to 0.8 -> -1.6 (clipped), term 1.6
    #   d: r=1.1, A=-1 -> tie, term 1.1
    #   loss = (-1.28 - 0.5 + 1.6 + 1.1) / 4 = 0.23 (0.25 with symmetric clipping)
    logprobs, old, adv, mask = _policy_inputs()
    loss, stats = ppo_policy_loss(logprobs, old, adv, mask, 0.2, 0.28)
    assert loss.item() == pytest.approx(0.23, abs=1e-12) and stats.clipfrac.item() == 0.5
    loss.backward()
    assert logprobs.grad[0, 0].item() == 0.0  # still clipped: no gradient


def test_default_clip_high_is_bitwise_the_symmetric_loss():
    logprobs, old, adv, mask = _policy_inputs()
    a, _ = ppo_policy_loss(logprobs, old, adv, mask, 0.2)
    b, _ = ppo_policy_loss(logprobs, old, adv, mask, 0.2, 0.2, "token_mean", None)
    assert a.item() == b.item() == pytest.approx(0.25, abs=1e-12)


def test_gspo_sequence_ratio_hand_values():
    # Row 0: token log-ratios 0.3, -0.1 -> mean 0.1 -> r = e^0.1 = 1.10517 on both tokens, A = +1: inside
    # [0.8, 1.2], terms -1.10517 each. Row 1 (length 1): log-ratio 0.5 -> r = 1.6487 -> clipped to 1.2,
    # term -1.2. Row 2 all masked (garbage).
    old = torch.zeros(3, 2, dtype=torch.float64)
    lp = torch.tensor([[0.3, -0.1], [0.5, 9.0], [50.0, 50.0]], dtype=torch.float64, requires_grad=True)
    adv = torch.ones(3, 2, dtype=torch.float64)
    mask = torch.tensor([[1, 1], [1, 0], [0, 0]])
    loss, stats = ppo_policy_loss(lp, old, adv, mask, 0.2, ratio_level="sequence")
    r = E(0.1)
    assert loss.item() == pytest.approx((-2 * r - 1.2) / 3, abs=1e-12)  # token mean over 3 tokens
    assert stats.clipfrac.item() == pytest.approx(1 / 3)
    loss.backward()
    # d/dl0 of -(2/3) e^((l0 + l1)/2) = -(1/3) e^0.1 for each token of row 0; row 1 clipped: 0.
    assert lp.grad[0].tolist() == pytest.approx([-r / 3] * 2, abs=1e-12)
    assert lp.grad[1:].abs().sum().item() == 0.0
    seq, _ = ppo_policy_loss(lp, old, adv, mask, 0.2, loss_agg="seq_mean_token_mean", ratio_level="sequence")
    assert seq.item() == pytest.approx((-r - 1.2) / 2, abs=1e-12)  # mean of the two rows' means


def test_policy_loss_on_a_micro_batch_divides_by_the_given_denominator():
    # On policy, A = 2 on 2 tokens: numerator -4; the whole mini-batch had 8 tokens -> -0.5.
    lp = torch.zeros(1, 2)
    loss, _ = ppo_policy_loss(lp, lp, torch.full((1, 2), 2.0), torch.ones(1, 2), 0.2, denominator=8.0)
    assert loss.item() == pytest.approx(-0.5)


# ---------------------------------------------------------------- overlong
def test_overlong_penalty_hand_values():
    # L_max 12, buffer 4 -> the zone starts after 8 tokens; -1.0 * (L - 8) / 4 inside it.
    lengths = torch.tensor([5, 8, 9, 11, 12, 1])
    out = overlong_penalty(lengths, max_new_tokens=12, buffer=4, penalty=1.0)
    assert out.tolist() == pytest.approx([0.0, 0.0, -0.25, -0.75, -1.0, 0.0])
    assert overlong_penalty(lengths, 12, 0, 1.0).abs().sum().item() == 0.0


def test_truncated_rows_reach_the_limit_without_ending():
    mask = torch.tensor([[1.0] * 3, [1.0] * 3, [1.0, 0, 0], [0.0] * 3])
    ended = torch.tensor([True, False, False, False])
    assert truncated_rows(mask, ended, max_new_tokens=3).tolist() == [False, True, False, False]


# ---------------------------------------------------------------- KL as a loss
def test_kl_loss_matrix_hand_values_and_gradient():
    # k3 with r = ref - lp = 0, +1, -1: e^r - 1 - r = 0, e - 2, e^-1; times β = 0.1; padding 0.
    lp = torch.tensor([[-1.0, -2.0], [-0.5, NAN]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.0, -1.0], [-1.5, NAN]], dtype=torch.float64)
    mask = torch.tensor([[1, 1], [1, 0]])
    mat = kl_loss_matrix(lp, ref, mask, 0.1, "k3")
    assert mat.flatten().tolist() == pytest.approx([0.0, 0.1 * (E(1) - 2), 0.1 * E(-1), 0.0], abs=1e-12)
    loss = aggregate(mat, mask, "token_mean")
    assert loss.item() == pytest.approx(0.1 * (E(1) - 2 + E(-1)) / 3, abs=1e-12)
    loss.backward()
    # d k3 / d lp = 1 - e^(ref - lp): 0, 1 - e, 1 - e^-1; times 0.1 / 3 tokens
    expected = [0.0, 0.1 * (1 - E(1)) / 3, 0.1 * (1 - E(-1)) / 3, 0.0]
    assert lp.grad.flatten().tolist() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum",
                                      "seq_mean_token_sum_norm"])
def test_clip_higher_with_a_length_one_row_and_an_all_masked_row(loss_agg):
    # Row 0 (length 1): r = 1.25, A = +1 -> inside [0.8, 1.28], term -1.25 (symmetric ε 0.2 would clip: -1.2).
    # Row 1: all masked, garbage. Every mode: one token in one sequence -> -1.25, except
    # seq_mean_token_sum_norm: -1.25 / (B=2 * norm_len=2) = -0.3125.
    lp = torch.tensor([[math.log(1.25), 7.0], [50.0, 50.0]], dtype=torch.float64, requires_grad=True)
    old, adv = torch.zeros(2, 2, dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64)
    mask = torch.tensor([[1, 0], [0, 0]])
    loss, stats = ppo_policy_loss(lp, old, adv, mask, 0.2, 0.28, loss_agg, norm_len=2)
    expected = -1.25 / 4 if loss_agg == "seq_mean_token_sum_norm" else -1.25
    assert loss.item() == pytest.approx(expected, abs=1e-12) and stats.clipfrac.item() == 0.0
    loss.backward()
    assert torch.isfinite(lp.grad).all() and lp.grad[1].abs().sum().item() == 0.0


def test_kl_loss_of_an_all_masked_batch_is_zero():
    lp = torch.full((2, 3), NAN, dtype=torch.float64, requires_grad=True)
    mat = kl_loss_matrix(lp, torch.full((2, 3), NAN, dtype=torch.float64), torch.zeros(2, 3), 0.1, "k3")
    loss = aggregate(mat, torch.zeros(2, 3), "seq_mean_token_mean")
    loss.backward()
    assert loss.item() == 0.0 and (lp.grad == 0).all()
