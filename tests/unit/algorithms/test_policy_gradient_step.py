import pytest
import torch

from rlhf.algorithms.policy_gradient_step import apply_overlong, ended_rows
from rlhf.config import Config
from rlhf.records import RolloutBatch

EOS = 2


def _rollout():
    # prompt block of 2, response block of 4 (= max_new_tokens); lengths 4 (no EOS: truncated),
    # 4 ending on EOS (ended at the limit), 3 (stopped early), 0 (empty).
    responses = [[5, 6, 7, 8], [5, 6, 7, EOS], [5, EOS, 0, 0], [0, 0, 0, 0]]
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)
    seq = torch.tensor([[9, 9] + r for r in responses])
    return RolloutBatch(seq, torch.ones_like(seq), mask, torch.zeros(4, 4), 2, ["p"] * 4, ["r"] * 4, [0] * 4, 0)


def test_ended_rows_read_eos_or_an_early_stop():
    assert ended_rows(_rollout(), EOS).tolist() == [False, True, True, True]


def test_overlong_filter_and_penalty_on_a_rollout():
    cfg = Config()
    cfg.rollout.max_new_tokens = 4
    cfg.algorithm.overlong.filter = True
    cfg.algorithm.overlong.buffer = 2
    cfg.algorithm.overlong.penalty = 1.0
    scores = torch.tensor([1.0, 1.0, 1.0, 1.0])
    shaped, keep, metrics = apply_overlong(cfg, _rollout(), scores, EOS)
    # zone after 4 - 2 = 2 tokens: lengths 4, 4, 2, 0 -> penalties -1, -1, 0, 0
    assert shaped.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert keep.tolist() == [False, True, True, True]
    assert metrics["response/truncated_frac"] == pytest.approx(0.25)


def test_overlong_defaults_change_nothing():
    cfg = Config()
    cfg.rollout.max_new_tokens = 4
    scores = torch.tensor([0.5, float("nan"), 0.25, 0.0])
    shaped, keep, _ = apply_overlong(cfg, _rollout(), scores, EOS)
    assert torch.equal(shaped[[0, 2, 3]], scores[[0, 2, 3]]) and shaped[1].isnan() and keep.all()
