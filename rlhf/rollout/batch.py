"""Turn engine generations into a padded `RolloutBatch`."""
from __future__ import annotations

from typing import Optional

import torch

from rlhf.records import RolloutBatch
from rlhf.rollout.sampling import Generation


def collate_rollout(
    prompt_token_ids: list[list[int]],
    prompt_texts: list[str],
    prompt_rows: list[int],
    generations: list[Generation],
    tokenizer,
    policy_version: int,
    prompt_columns: Optional[list[dict]] = None,
) -> RolloutBatch:
    """Lay out [left-padded prompt | right-padded response] rows, one per generation, in order.

    A generation with no tokens keeps one pad token with mask 0, so every row has a
    response block and the math sees an all-masked row (zero advantage), not a crash.
    `prompt_columns` (one dict per prompt: its data row's other fields) is copied onto each sample.
    """
    pad_id = tokenizer.pad_token_id
    prompt_len = max(len(prompt_token_ids[g.prompt_index]) for g in generations)
    response_len = max(1, max(len(g.token_ids) for g in generations))
    rows = len(generations)
    sequences = torch.full((rows, prompt_len + response_len), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(sequences)
    response_mask = torch.zeros(rows, response_len)
    rollout_logprobs = torch.zeros(rows, response_len)
    for row, gen in enumerate(generations):
        prompt = prompt_token_ids[gen.prompt_index]
        sequences[row, prompt_len - len(prompt):prompt_len] = torch.tensor(prompt)
        attention_mask[row, prompt_len - len(prompt):prompt_len] = 1
        n = len(gen.token_ids)
        if n:
            sequences[row, prompt_len:prompt_len + n] = torch.tensor(gen.token_ids)
            attention_mask[row, prompt_len:prompt_len + n] = 1
            response_mask[row, :n] = 1
            rollout_logprobs[row, :n] = torch.tensor(gen.logprobs)
    return RolloutBatch(
        sequences=sequences,
        attention_mask=attention_mask,
        response_mask=response_mask,
        rollout_logprobs=rollout_logprobs,
        prompt_len=prompt_len,
        prompts=[prompt_texts[g.prompt_index] for g in generations],
        responses=[tokenizer.decode(g.token_ids, skip_special_tokens=True) for g in generations],
        prompt_index=[prompt_rows[g.prompt_index] for g in generations],
        policy_version=policy_version,
        columns=[prompt_columns[g.prompt_index] for g in generations] if prompt_columns else [],
    )
