import math

import torch

from rlhf.algorithms.ppo_advantages import compute_targets, sequence_kl


def _targets(scores, advantage, values=None, group_size=2, kl_coef=0.0):
    mask = torch.tensor([[1.0, 1.0, 0.0]] * len(scores))
    zeros = torch.zeros(len(scores), 3)
    return compute_targets(
        torch.tensor(scores), zeros, zeros, mask, values, advantage=advantage, kl_coef=kl_coef,
        kl_estimator="k1", gamma=1.0, gae_lambda=1.0, group_size=group_size, whiten_advantages=False,
    )


def test_gae_with_zero_values_is_return_to_go():
    t = _targets([1.0, 3.0], "gae", values=torch.zeros(2, 3))
    # gamma = lambda = 1, no KL, V = 0: every response token's advantage is the final score.
    assert torch.equal(t.advantages, torch.tensor([[1.0, 1.0, 0.0], [3.0, 3.0, 0.0]]))
    assert torch.equal(t.returns, t.advantages)


def test_rloo_group_baseline_by_hand():
    t = _targets([1.0, 3.0, 2.0, 2.0], "rloo")
    # group (1, 3): 1 - 3 = -2, 3 - 1 = 2; group (2, 2): 0, 0
    assert torch.equal(t.advantages[:, 0], torch.tensor([-2.0, 2.0, 0.0, 0.0]))
    assert torch.equal(t.advantages[:, 2], torch.zeros(4))


def test_nan_score_is_left_out_and_counted():
    t = _targets([1.0, float("nan"), 0.0, 2.0, 4.0, 6.0], "rloo", group_size=3)
    assert t.valid.tolist() == [True, False, True, True, True, True]
    # first group keeps (1, 0): 1 - 0 = 1, 0 - 1 = -1; the NaN sample gets 0 everywhere;
    # second group (2, 4, 6): 2 - (4+6)/2 = -3, 4 - (2+6)/2 = 0, 6 - (2+4)/2 = 3
    assert t.advantages[:, 0].tolist() == [1.0, 0.0, -1.0, -3.0, 0.0, 3.0]
    assert all(math.isfinite(v) for v in t.advantages.flatten().tolist())
    assert torch.equal(t.token_rewards[1], torch.zeros(3))


def test_grpo_kl_penalty_enters_sequence_reward():
    mask = torch.ones(2, 2)
    logprobs = torch.tensor([[-1.0, -1.0], [-1.0, -1.0]])
    ref = torch.tensor([[-1.0, -1.0], [-2.0, -2.0]])  # k1 KL: row 0 -> 0, row 1 -> 1 per token
    t = compute_targets(torch.tensor([1.0, 1.0]), logprobs, ref, mask, None, advantage="grpo", kl_coef=0.5,
                        kl_estimator="k1", gamma=1.0, gae_lambda=1.0, group_size=2, whiten_advantages=False)
    # sequence rewards 1 - 0 = 1 and 1 - 0.5 * 2 = 0; mean 0.5, sample std sqrt(0.5): ±0.5 / 0.7071 = ±0.7071
    assert torch.allclose(t.advantages[:, 0], torch.tensor([0.70710, -0.70710]), atol=1e-4)
    assert sequence_kl(t.kl, mask).item() == 1.0  # (0 + 2) / 2


def test_dr_grpo_advantage_is_mean_centred_only():
    scores = torch.tensor([1.0, 3.0, 2.0, 2.0])
    mask = torch.ones(4, 2)
    zeros = torch.zeros(4, 2)
    t = compute_targets(scores, zeros, zeros, mask, None, advantage="grpo", kl_coef=0.0, kl_estimator="k1",
                        gamma=1.0, gae_lambda=1.0, group_size=2, whiten_advantages=False, scale_by_std=False)
    # group (1, 3): mean 2 -> -1, +1 (not divided by the std sqrt(2)); group (2, 2): 0, 0
    assert t.advantages[:, 0].tolist() == [-1.0, 1.0, 0.0, 0.0]


def test_kl_placed_in_the_loss_leaves_the_reward_unshaped_but_still_measures_kl():
    from rlhf.algorithms.policy_gradient_step import reward_kl_coef
    from rlhf.config import Config

    cfg = Config()
    cfg.algorithm.kl.placement = "loss"
    logprobs, ref = torch.tensor([[-1.0, -1.0]]), torch.tensor([[-2.0, -2.0]])
    t = compute_targets(torch.tensor([1.0]), logprobs, ref, torch.ones(1, 2), None, advantage="reinforce_pp",
                        kl_coef=reward_kl_coef(cfg, 0.5), kl_estimator="k1", gamma=1.0, gae_lambda=1.0,
                        group_size=1, whiten_advantages=False)
    assert t.token_rewards.tolist() == [[0.0, 1.0]]  # the score only, no -β KL
    assert sequence_kl(t.kl, torch.ones(1, 2)).item() == 2.0  # what the controller steers on: 1 + 1
