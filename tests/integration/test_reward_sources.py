"""Reward sources on real components: the letters function and the tiny reward model."""
from __future__ import annotations

import pytest
import torch

from rlhf.models.forward import sequence_scores
from rlhf.rewards import check_scores
from rlhf.rewards.function import FunctionReward
from rlhf.rewards.model import ModelReward


def test_function_source_scores_strings():
    source = FunctionReward("rlhf.tasks:letter_reward")
    scores = source.score(["Repeat the letter b.", "Repeat the letter k."], ["bb", "kx"])
    assert scores.tolist() == [1.0, 0.5]


def test_function_source_bad_spec():
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        FunctionReward("no_such_module:fn")
    with pytest.raises(ValueError, match="has no callable 'nope'"):
        FunctionReward("rlhf.tasks:nope")


def test_check_scores_rejects_wrong_count_and_non_numbers():
    with pytest.raises(ValueError, match="returned 1 scores for 2 responses"):
        check_scores([1.0], 2, "s")
    with pytest.raises(ValueError, match="returned non-numbers"):
        check_scores(["high", 1.0], 2, "s")


def test_model_source_micro_batches_equal_row_by_row(tiny_assets):
    source = ModelReward(str(tiny_assets.reward), micro_batch_size=2)
    torch.manual_seed(0)
    sequences = torch.randint(3, 100, (5, 9))
    attention_mask = torch.ones_like(sequences)
    attention_mask[0, :3] = 0  # left padding
    attention_mask[1, -2:] = 0  # right padding
    scores = source.score([""] * 5, [""] * 5, sequences, attention_mask)
    with torch.no_grad():
        alone = [float(sequence_scores(source.model, sequences[i:i + 1][:, attention_mask[i].bool()],
                                       torch.ones(1, int(attention_mask[i].sum()), dtype=torch.long)))
                 for i in range(5)]
    assert scores.shape == (5,)
    assert torch.allclose(scores, torch.tensor(alone), atol=1e-5)
