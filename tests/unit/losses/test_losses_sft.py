import math

import pytest
import torch

from rlhf.losses.sft import IGNORE_INDEX, reference_kl_loss, sft_loss


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


def test_reference_kl_hand_values_over_labelled_positions():
    # Vocabulary of 2. Position 0 predicts the labelled token 1: reference (1/2, 1/2), model (3/4, 1/4):
    # KL = 1/2 log((1/2)/(3/4)) + 1/2 log((1/2)/(1/4)) = 1/2 log(4/3). Position 1 predicts an ignored token.
    logits = torch.tensor([[[math.log(3.0), 0.0], [9.0, 0.0], [0.0, 0.0]]])
    reference = torch.tensor([[[0.0, 0.0], [0.0, 9.0], [1.0, 2.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX]])
    assert reference_kl_loss(logits, reference, labels).item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)


def test_reference_kl_is_zero_at_the_reference_whatever_the_tokens():
    # Unlike the next-token loss, its optimum is the reference's own predictions, not the rows' tokens.
    reference = torch.randn(2, 5, 7)
    labels = torch.randint(0, 7, (2, 5))
    assert reference_kl_loss(reference.clone(), reference, labels).item() == pytest.approx(0.0, abs=1e-6)
    assert reference_kl_loss(reference + torch.randn(2, 5, 7), reference, labels).item() > 0


def test_reference_kl_gradient_moves_towards_the_reference_and_ignores_unlabelled_rows():
    logits = torch.zeros(1, 2, 2, requires_grad=True)
    reference = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
    reference_kl_loss(logits, reference, torch.tensor([[IGNORE_INDEX, 0]])).backward()
    assert logits.grad[0, 0, 0] < 0 < logits.grad[0, 0, 1]  # descent raises the reference's likelier token
    assert torch.equal(logits.grad[0, 1], torch.zeros(2))  # the last position predicts nothing


def test_reference_kl_without_labels_is_zero_and_checks_shapes():
    logits = torch.randn(1, 3, 4, requires_grad=True)
    loss = reference_kl_loss(logits, torch.randn(1, 3, 4), torch.full((1, 3), IGNORE_INDEX))
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError, match="do not match"):
        reference_kl_loss(torch.zeros(1, 3, 4), torch.zeros(1, 3, 5), torch.zeros(1, 3, dtype=torch.long))
