"""The distill mode's objective on a live (tiny, random) causal LM: which loss each record gets."""
from __future__ import annotations

import pytest
import torch

from rlhf.algorithms.distill_losses import distill_micro_batch_loss, distill_or_sft_micro_batch_loss
from rlhf.assets.models import TinyModelSpec, build_policy
from rlhf.losses.distill import distill_loss
from rlhf.records import DistillBatch, PreferenceBatch

SPEC = TinyModelSpec(hidden_size=32, num_heads=1, num_kv_heads=None, intermediate_size=64, num_layers=1)


def _batch(model) -> DistillBatch:
    torch.manual_seed(0)
    sequences = torch.randint(3, 40, (2, 6))
    attention_mask = torch.ones_like(sequences)
    teacher = torch.log_softmax(torch.randn(2, 3, 40), dim=-1)
    return DistillBatch(sequences, attention_mask, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]), teacher,
                        prompt_len=3)


def test_distill_batch_gets_the_divergence_at_the_response_positions():
    model = build_policy(SPEC, vocab_size=40, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    batch = _batch(model)
    loss, metrics = distill_or_sft_micro_batch_loss(model, batch, "jsd", 0.5, 1.0)
    # Position P-1+r predicts response token r: logits [:, 2:5] of the 6-token rows.
    logits = model(input_ids=batch.sequences, attention_mask=batch.attention_mask).logits[:, 2:5]
    expected, stats = distill_loss(logits, batch.teacher_logprobs, batch.response_mask, "jsd", 0.5, 1.0)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), abs=1e-6)
    assert metrics == pytest.approx({"distill/divergence": float(expected.detach()),
                                     "distill/forward_kl": stats.forward_kl, "distill/reverse_kl": stats.reverse_kl})
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_padding_only_micro_batch_reports_nothing_and_other_records_are_refused():
    model = build_policy(SPEC, vocab_size=40, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    batch = _batch(model)
    padding = DistillBatch(batch.sequences, batch.attention_mask, torch.zeros(2, 3), batch.teacher_logprobs, 3)
    loss, metrics = distill_micro_batch_loss(model, padding, "forward_kl", 0.5, 1.0)
    assert float(loss.detach()) == 0.0 and metrics == {}
    with pytest.raises(TypeError, match="DistillBatch or SFTBatch, got PreferenceBatch"):
        distill_or_sft_micro_batch_loss(model, PreferenceBatch(*[None] * 9, prompt_len=1), "jsd", 0.5, 1.0)
