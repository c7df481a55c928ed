import math

import pytest
import torch

from rlhf.losses import (
    PolicyLossStats,
    entropy_from_logits,
    kl_penalized_rewards,
    ppo_policy_loss,
    value_loss,
)

# Policy loss, clip 0.2, one row of five tokens (the last masked):
#   a: r=1.5, A=+1 -> unclipped 1.5, clipped 1.2  -> min 1.2  (clipped)  term -1.2
#   b: r=0.5, A=+1 -> unclipped 0.5, clipped 0.8  -> min 0.5            term -0.5
#   c: r=0.5, A=-2 -> unclipped -1.0, clipped -1.6 -> min -1.6 (clipped) term 1.6
#   d: r=1.1, A=-1 -> both -1.1 (tie: not counted as clipped)           term 1.1
#   loss = (-1.2 - 0.5 + 1.6 + 1.1) / 4 = 0.25, clipfrac = 2/4
RATIOS = [1.5, 0.5, 0.5, 1.1]
ADV = [1.0, 1.0, -2.0, -1.0]


def _policy_inputs():
    old = torch.tensor([[-1.0, -2.0, -0.5, -1.5, -3.0]], dtype=torch.float64)
    log_r = torch.tensor([[math.log(x) for x in RATIOS] + [100.0]], dtype=torch.float64)
    logprobs = (old + log_r).requires_grad_(True)
    adv = torch.tensor([ADV + [5.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    return logprobs, old, adv, mask


def test_ppo_policy_loss_hand_values():
    logprobs, old, adv, mask = _policy_inputs()
    loss, stats = ppo_policy_loss(logprobs, old, adv, mask, clip_eps=0.2)
    assert isinstance(stats, PolicyLossStats)
    assert loss.item() == pytest.approx(0.25, abs=1e-12)
    assert stats.clipfrac.item() == pytest.approx(0.5)
    expected_kl = sum(0.5 * math.log(x) ** 2 for x in RATIOS) / 4
    assert stats.approx_kl.item() == pytest.approx(expected_kl, rel=1e-12)
    assert not stats.clipfrac.requires_grad and not stats.approx_kl.requires_grad


def test_ppo_policy_loss_gradient_only_through_unclipped_tokens():
    logprobs, old, adv, mask = _policy_inputs()
    loss, _ = ppo_policy_loss(logprobs, old, adv, mask, clip_eps=0.2)
    loss.backward()
    # d(-r A)/d log pi = -r A, divided by 4 tokens; clipped tokens have zero grad
    expected = [0.0, -0.5 * 1.0 / 4, 0.0, -1.1 * -1.0 / 4, 0.0]
    assert torch.allclose(logprobs.grad, torch.tensor([expected], dtype=torch.float64), atol=1e-12)


def test_ppo_policy_loss_on_policy_equals_minus_mean_advantage():
    # r = 1 everywhere: loss = -mean(A) over the 3 masked tokens = -(1 + 2 + 3) / 3
    lp = torch.zeros(2, 3)
    adv = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    loss, stats = ppo_policy_loss(lp, lp, adv, mask, 0.2)
    assert loss.item() == pytest.approx(-2.0)
    assert stats.clipfrac.item() == 0.0 and stats.approx_kl.item() == 0.0


def test_ppo_policy_loss_all_masked_and_length_one():
    lp = torch.randn(2, 3, requires_grad=True)
    loss, stats = ppo_policy_loss(lp, torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 3), 0.2)
    loss.backward()
    assert loss.item() == 0.0 and stats.clipfrac.item() == 0.0
    assert torch.equal(lp.grad, torch.zeros(2, 3))

    lp1 = torch.tensor([[math.log(2.0)]])
    loss1, stats1 = ppo_policy_loss(lp1, torch.zeros(1, 1), torch.tensor([[3.0]]), torch.ones(1, 1), 0.2)
    # r = 2, A = 3: min(6, 1.2 * 3 = 3.6) = 3.6 -> loss -3.6, clipped
    assert loss1.item() == pytest.approx(-3.6)
    assert stats1.clipfrac.item() == 1.0


def test_ppo_policy_loss_garbage_padding_keeps_grad_finite():
    lp = torch.tensor([[-1.0, 500.0]], requires_grad=True)
    old = torch.tensor([[-1.0, float("nan")]])
    adv = torch.tensor([[2.0, float("inf")]])
    loss, stats = ppo_policy_loss(lp, old, adv, torch.tensor([[1, 0]]), 0.2)
    loss.backward()
    assert loss.item() == pytest.approx(-2.0)
    assert torch.equal(lp.grad, torch.tensor([[-2.0, 0.0]]))
    assert torch.isfinite(stats.approx_kl)


# Value loss, clip 0.2:
#   t0: v=1.0, old=0.5, R=1.0 -> (0)^2 = 0 vs clip v=0.7 -> 0.09  -> 0.09 (clipped)
#   t1: v=0.6, old=0.5, R=0.0 -> 0.36 vs clip v=0.6 -> 0.36       -> 0.36
#   t2: v=2.0, old=0.5, R=0.0 -> 4.0 vs clip v=0.7 -> 0.49        -> 4.0
#   loss = 0.5 * (0.09 + 0.36 + 4.0) / 3 = 0.741666..., clipfrac 1/3
#   unclipped: 0.5 * (0 + 0.36 + 4.0) / 3 = 0.726666...
def _value_inputs():
    values = torch.tensor([[1.0, 0.6, 2.0, 50.0]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[0.5, 0.5, 0.5, -50.0]], dtype=torch.float64)
    ret = torch.tensor([[1.0, 0.0, 0.0, float("nan")]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    return values, old, ret, mask


def test_value_loss_clipped_hand_values():
    values, old, ret, mask = _value_inputs()
    loss, stats = value_loss(values, old, ret, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(0.5 * 4.45 / 3, rel=1e-12)
    assert stats.clipfrac.item() == pytest.approx(1 / 3)
    loss.backward()
    # t0 clipped (clamp inactive gradient) -> 0; t1: (v - R)/3 = 0.2; t2: 2/3
    assert torch.allclose(values.grad, torch.tensor([[0.0, 0.2, 2 / 3, 0.0]], dtype=torch.float64))


def test_value_loss_without_clipping():
    values, old, ret, mask = _value_inputs()
    loss, stats = value_loss(values, old, ret, mask, clip_eps=None)
    assert loss.item() == pytest.approx(0.5 * 4.36 / 3, rel=1e-12)
    assert stats.clipfrac.item() == 0.0


def test_value_loss_all_masked():
    loss, stats = value_loss(torch.ones(2, 2), torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2), 0.2)
    assert loss.item() == 0.0 and stats.clipfrac.item() == 0.0


def test_entropy_uniform_and_onehot():
    logits = torch.zeros(1, 2, 4)
    logits[0, 1] = torch.tensor([1e4, 0.0, 0.0, 0.0])
    h = entropy_from_logits(logits)
    assert torch.allclose(h, torch.tensor([[math.log(4), 0.0]]), atol=1e-6)


def test_entropy_with_minus_inf_logits_and_bf16():
    logits = torch.tensor([[[0.0, 0.0, float("-inf")]]])
    assert torch.allclose(entropy_from_logits(logits), torch.tensor([[math.log(2)]]))
    h = entropy_from_logits(torch.zeros(2, 3, 8, dtype=torch.bfloat16))
    assert h.dtype == torch.float32
    assert torch.allclose(h, torch.full((2, 3), math.log(8)))


def test_entropy_random_matches_definition():
    logits = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = torch.zeros(2, 3, dtype=torch.float64)
    for b in range(2):
        for t in range(3):
            z = [math.exp(v) for v in logits[b, t].tolist()]
            s = sum(z)
            expected[b, t] = -sum(p / s * math.log(p / s) for p in z)
    assert torch.allclose(entropy_from_logits(logits).double(), expected, atol=1e-5)


def test_kl_penalized_rewards_padding_and_last_token():
    # logprobs - ref = d; rows: right-padded, all-masked, length-1, left-padded
    d = torch.tensor([[0.5, -0.2, 9.0], [1.0, 1.0, 1.0], [0.3, 7.0, 7.0], [7.0, 0.4, 0.2]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 1]])
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0])
    rewards, kl = kl_penalized_rewards(scores, d, torch.zeros(4, 3), mask, kl_coef=0.1)
    exp_kl = torch.tensor([[0.5, -0.2, 0.0], [0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.4, 0.2]])
    # -0.1 * kl, plus the score on the last masked position
    exp_r = torch.tensor(
        [[-0.05, 0.02 + 1.0, 0.0], [0.0, 0.0, 0.0], [-0.03 + 3.0, 0.0, 0.0], [0.0, -0.04, -0.02 + 4.0]]
    )
    assert torch.allclose(kl, exp_kl)
    assert torch.allclose(rewards, exp_r, atol=1e-6)


def test_kl_penalized_rewards_k2_and_unknown_kind():
    lp = torch.tensor([[0.0, -1.0]])
    ref = torch.tensor([[-2.0, -1.0]])
    rewards, kl = kl_penalized_rewards(torch.tensor([0.5]), lp, ref, torch.ones(1, 2), 0.5, kind="k2")
    # k2: 0.5 * 2^2 = 2, 0; rewards -0.5 * 2 = -1, then 0 + score 0.5
    assert torch.allclose(kl, torch.tensor([[2.0, 0.0]]))
    assert torch.allclose(rewards, torch.tensor([[-1.0, 0.5]]))
    with pytest.raises(ValueError):
        kl_penalized_rewards(torch.tensor([0.5]), lp, ref, torch.ones(1, 2), 0.5, kind="k9")


def test_kl_penalized_rewards_grad_finite_with_garbage_padding():
    lp = torch.tensor([[-1.0, float("nan")]], requires_grad=True)
    ref = torch.tensor([[-1.5, float("-inf")]])
    rewards, kl = kl_penalized_rewards(torch.tensor([1.0]), lp, ref, torch.tensor([[1, 0]]), 0.1, kind="k3")
    rewards.sum().backward()
    assert torch.isfinite(rewards).all() and torch.isfinite(lp.grad).all()
    assert lp.grad[0, 1].item() == 0.0
