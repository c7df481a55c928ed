import math

import pytest
import torch

from rlhf.advantages import (
    CRITIC_FREE_ESTIMATORS,
    ESTIMATORS,
    broadcast_to_tokens,
    gae,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
)

# Hand-worked GAE, gamma = 1, lam = 0.5, rewards [0, 0, 1], values [0.5, 0.6, 0.7]:
#   d2 = 1 + 0   - 0.7 = 0.3   A2 = 0.3
#   d1 = 0 + 0.7 - 0.6 = 0.1   A1 = 0.1 + 0.5 * 0.3  = 0.25
#   d0 = 0 + 0.6 - 0.5 = 0.1   A0 = 0.1 + 0.5 * 0.25 = 0.225
#   returns = A + V = [0.725, 0.85, 1.0]
HAND_ADV = [0.225, 0.25, 0.3]
HAND_RET = [0.725, 0.85, 1.0]


def test_estimator_names():
    assert CRITIC_FREE_ESTIMATORS == ("grpo", "rloo", "reinforce_pp")
    assert ESTIMATORS == ("gae", "grpo", "rloo", "reinforce_pp")


def test_gae_hand_example():
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.6, 0.7]])
    adv, ret = gae(r, v, torch.ones(1, 3), gamma=1.0, lam=0.5)
    assert torch.allclose(adv, torch.tensor([HAND_ADV]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([HAND_RET]), atol=1e-6)


def test_gae_right_and_left_padding_ignore_garbage():
    r = torch.tensor([[0.0, 0.0, 1.0, 100.0, -50.0], [100.0, 7.0, 0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.6, 0.7, 100.0, float("nan")], [9.0, 9.0, 0.5, 0.6, 0.7]])
    m = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1]])
    adv, ret = gae(r, v, m, gamma=1.0, lam=0.5)
    assert torch.allclose(adv, torch.tensor([HAND_ADV + [0, 0], [0, 0] + HAND_ADV]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([HAND_RET + [0, 0], [0, 0] + HAND_RET]), atol=1e-6)


def test_gae_length_one_and_all_masked():
    r = torch.tensor([[2.0, 5.0], [3.0, 3.0]])
    v = torch.tensor([[0.5, 5.0], [1.0, 1.0]])
    m = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    adv, ret = gae(r, v, m, gamma=0.9, lam=0.95)
    # single token: A = r - V = 1.5 (no bootstrap past the end), R = 2
    assert torch.allclose(adv, torch.tensor([[1.5, 0.0], [0.0, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[2.0, 0.0], [0.0, 0.0]]))


def _gae_loop(rewards, values, lengths, gamma, lam):
    B, T = len(rewards), len(rewards[0])
    adv = [[0.0] * T for _ in range(B)]
    for b in range(B):
        last = 0.0
        for t in reversed(range(lengths[b])):
            next_v = values[b][t + 1] if t + 1 < lengths[b] else 0.0
            delta = rewards[b][t] + gamma * next_v - values[b][t]
            last = delta + gamma * lam * last
            adv[b][t] = last
    return adv


def test_gae_matches_python_loop_random_right_padded():
    g = torch.Generator().manual_seed(0)
    B, T, gamma, lam = 5, 9, 0.97, 0.9
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = [9, 1, 0, 4, 7]
    mask = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    expected = _gae_loop(rewards.tolist(), values.tolist(), lengths, gamma, lam)
    expected_ret = [
        [expected[b][t] + values[b, t].item() if t < lengths[b] else 0.0 for t in range(T)]
        for b in range(B)
    ]
    assert torch.allclose(adv, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ret, torch.tensor(expected_ret, dtype=torch.float64), atol=1e-12)


def test_gae_outputs_are_detached():
    v = torch.zeros(1, 2, requires_grad=True)
    adv, ret = gae(torch.ones(1, 2), v, torch.ones(1, 2), 1.0, 1.0)
    assert not adv.requires_grad and not ret.requires_grad


def test_grpo_hand_values():
    scores = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 6.0])
    adv = grpo_advantages(scores, group_size=3)
    # group 1: mean 2, unbiased std sqrt((1 + 0 + 1) / 2) = 1
    # group 2: mean 2, deviations (-2, -2, 4), std sqrt((4 + 4 + 16) / 2) = sqrt(12)
    s12 = math.sqrt(12)
    expected = torch.tensor([-1.0, 0.0, 1.0, -2 / s12, -2 / s12, 4 / s12])
    assert torch.allclose(adv, expected, rtol=1e-5, atol=1e-6)


def test_grpo_without_std_scaling():
    scores = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 6.0])
    adv = grpo_advantages(scores, 3, scale_by_std=False)
    assert torch.allclose(adv, torch.tensor([-1.0, 0.0, 1.0, -2.0, -2.0, 4.0]))


def test_grpo_identical_group_is_exactly_zero():
    # 0.1 * 3 / 3 != 0.1 in floating point; the result must still be 0 exactly
    scores = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7], dtype=torch.float64)
    assert torch.equal(grpo_advantages(scores, 3), torch.zeros(6, dtype=torch.float64))


def test_grpo_group_size_one_and_errors():
    assert torch.equal(grpo_advantages(torch.tensor([3.0, -1.0]), 1), torch.zeros(2))
    with pytest.raises(ValueError, match="divisible"):
        grpo_advantages(torch.ones(5), 2)
    with pytest.raises(ValueError):
        grpo_advantages(torch.ones(4), 0)


def test_rloo_hand_values():
    # [1, 2, 3]: 1 - (2+3)/2 = -1.5, 2 - (1+3)/2 = 0, 3 - (1+2)/2 = 1.5
    adv = rloo_advantages(torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0]), 3)
    assert torch.allclose(adv, torch.tensor([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]))
    # k = 2: each sample's baseline is the other one
    assert torch.allclose(rloo_advantages(torch.tensor([0.0, 4.0]), 2), torch.tensor([-4.0, 4.0]))


def test_rloo_errors():
    with pytest.raises(ValueError):
        rloo_advantages(torch.ones(4), 1)
    with pytest.raises(ValueError, match="divisible"):
        rloo_advantages(torch.ones(5), 2)


def test_reinforce_pp_hand_values():
    r = torch.tensor([[0.0, 0.0, 1.0, 9.0], [0.0, 2.0, 9.0, 9.0]])
    m = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    adv = reinforce_pp_advantages(r, m, gamma=1.0)
    # returns-to-go: row 0 [1, 1, 1], row 1 [2, 2]; mean (3 + 4) / 5 = 1.4,
    # population variance (3 * 0.16 + 2 * 0.36) / 5 = 0.24
    s = math.sqrt(0.24)
    lo, hi = (1 - 1.4) / s, (2 - 1.4) / s
    expected = torch.tensor([[lo, lo, lo, 0.0], [hi, hi, 0.0, 0.0]])
    assert torch.allclose(adv, expected, atol=1e-5)


def test_reinforce_pp_discounted_matches_loop():
    g = torch.Generator().manual_seed(1)
    B, T, gamma = 4, 6, 0.8
    r = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = [6, 1, 0, 3]
    m = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    rtg = []
    for b in range(B):
        g_t, row = 0.0, [0.0] * T
        for t in reversed(range(lengths[b])):
            g_t = r[b, t].item() + gamma * g_t
            row[t] = g_t
        rtg.append(row)
    flat = [rtg[b][t] for b in range(B) for t in range(lengths[b])]
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((x - mean) ** 2 for x in flat) / len(flat))
    expected = [
        [(rtg[b][t] - mean) / std if t < lengths[b] else 0.0 for t in range(T)] for b in range(B)
    ]
    adv = reinforce_pp_advantages(r, m, gamma)
    assert torch.allclose(adv, torch.tensor(expected, dtype=torch.float64), atol=1e-6)


def test_reinforce_pp_all_masked_is_zero():
    adv = reinforce_pp_advantages(torch.ones(2, 3), torch.zeros(2, 3))
    assert torch.equal(adv, torch.zeros(2, 3))


def test_broadcast_to_tokens():
    out = broadcast_to_tokens(torch.tensor([3.0, -1.0, 2.0]), torch.tensor([[0, 1, 1], [1, 0, 0], [0, 0, 0]]))
    assert torch.equal(out, torch.tensor([[0.0, 3.0, 3.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))


def _with_holes(t: torch.Tensor, holes: list[int], fill: float) -> torch.Tensor:
    """`t` [B, T] with columns inserted before the given indices, filled with garbage."""
    cols = list(t.unbind(1))
    for index in sorted(holes, reverse=True):
        cols.insert(index, torch.full_like(cols[0], fill))
    return torch.stack(cols, 1)


def test_observation_holes_inside_a_response_change_nothing():
    # A multi-turn episode's observation tokens are holes in the response mask: GAE and REINFORCE++ on
    # [policy, policy, obs, obs, policy, ...] must equal the same estimators on the policy tokens alone.
    g = torch.Generator().manual_seed(3)
    B, T, gamma, lam = 3, 6, 0.9, 0.8
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4], dtype=torch.float64)
    holes = [2, 2, 5]  # two observation tokens after the 2nd policy token, one after the 5th: columns 2, 3, 7
    holed_mask = _with_holes(mask, holes, 0.0)
    holed_rewards, holed_values = _with_holes(rewards, holes, 7.0), _with_holes(values, holes, -5.0)
    keep = [i for i in range(holed_mask.shape[1]) if i not in (2, 3, 7)]

    adv, ret = gae(rewards, values, mask, gamma, lam)
    holed_adv, holed_ret = gae(holed_rewards, holed_values, holed_mask, gamma, lam)
    assert torch.allclose(holed_adv[:, keep], adv) and torch.allclose(holed_ret[:, keep], ret)
    assert torch.all(holed_adv[:, [2, 3, 7]] == 0)

    pp = reinforce_pp_advantages(rewards, mask, gamma)
    holed_pp = reinforce_pp_advantages(holed_rewards, holed_mask, gamma)
    assert torch.allclose(holed_pp[:, keep], pp) and torch.all(holed_pp[:, [2, 3, 7]] == 0)
