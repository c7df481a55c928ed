"""Distill mode data handling without actors: padding a teacher-scored batch, the offline dataset rows."""
from __future__ import annotations

import torch

from rlhf.modes.distill import teacher_dataset_rows
from rlhf.records import DistillBatch, RolloutBatch


def _batch(rows: int) -> DistillBatch:
    return DistillBatch(sequences=torch.arange(rows * 5).view(rows, 5), attention_mask=torch.ones(rows, 5, dtype=torch.long),
                        response_mask=torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])[:rows],
                        teacher_logprobs=torch.randn(rows, 2, 4), prompt_len=3)


def test_padding_adds_weightless_rows_and_keeps_the_real_ones():
    batch = _batch(3)
    padded = batch.padded_to(5)
    assert len(padded) == 5 and padded.prompt_len == 3
    assert padded.weight() == batch.weight() == 3  # 2 + 1 + 0 response tokens; padding adds none
    assert torch.equal(padded.sequences[:3], batch.sequences) and torch.equal(padded.sequences[3], batch.sequences[0])
    assert padded.response_mask[3:].sum() == 0
    assert [len(part) for part in padded.split(5)] == [1] * 5


def test_teacher_dataset_rows_use_the_source_prompt_and_leave_out_empty_answers():
    rollout = RolloutBatch(sequences=torch.zeros(3, 4, dtype=torch.long), attention_mask=torch.ones(3, 4),
                           response_mask=torch.ones(3, 2), rollout_logprobs=torch.zeros(3, 2), prompt_len=2,
                           prompts=["<|user|>\nA<|end|>"] * 2 + ["<|user|>\nB<|end|>"],
                           responses=["a a", "  ", "b"], prompt_index=[1, 1, 2], policy_version=0)
    rows, empty = teacher_dataset_rows(rollout, {1: "Write the letter a.", 2: "Write the letter b."})
    assert rows == [{"prompt": "Write the letter a.", "response": "a a"},
                    {"prompt": "Write the letter b.", "response": "b"}]
    assert empty == 1
