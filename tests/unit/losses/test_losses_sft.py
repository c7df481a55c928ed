import math

import pytest
import torch

from rlhf.losses.sft import IGNORE_INDEX, sft_loss


def test_only_labelled_tokens_count_hand_values():
    # Vocabulary of 2. Position t predicts token t+1, so labels[:, 1:] are scored by logits[:, :-1].
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, 0]])
    loss, n = sft_loss(logits, labels)
    # token 1 from uniform logits: -log(1/2); token 0 from (log 3, 0): -log(3/4). Mean of the two.
    assert n == 2
    assert loss.item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2, rel=1e-6)


def test_prompt_labels_ignored_and_token_mean_over_batch():
    logits = torch.zeros(2, 3, 4)  # uniform: every scored token costs log 4
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2], [IGNORE_INDEX, 1, 3]])
    loss, n = sft_loss(logits, labels)
    assert n == 3 and loss.item() == pytest.approx(math.log(4), rel=1e-6)


def test_no_labelled_token_gives_zero_not_nan():
    logits = torch.randn(1, 3, 4, requires_grad=True)
    loss, n = sft_loss(logits, torch.full((1, 3), IGNORE_INDEX))
    assert n == 0 and loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_shape_mismatch():
    with pytest.raises(ValueError, match="do not match"):
        sft_loss(torch.zeros(1, 3, 4), torch.zeros(1, 2, dtype=torch.long))
