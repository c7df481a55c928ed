"""A tiny teacher for distillation: a larger causal LM (same tokenizer) that already does the letters task.

Distillation needs a teacher that is better at the task than the student. The teacher has about
twice the policy's parameters (wider, head dim 64 so vLLM's CPU attention serves it too) and is
trained briefly on reward-maximising demonstrations: the chat-templated train prompts followed by
a correct answer (`correct_response`, full `letter_reward`), next-token cross-entropy on the answer
and its end-of-sequence token only, exactly the SFT objective. Eval prompts are never seen.
Training is seeded and runs on one thread, so the same seed gives the same teacher on the same
machine; it costs a few CPU-seconds (measured numbers in the README).
"""
from __future__ import annotations

import random

import torch

from rlhf.assets.fit import fit_in_place
from rlhf.assets.datasets import correct_response
from rlhf.assets.models import TinyModelSpec
from rlhf.losses.sft import IGNORE_INDEX, sft_loss

# Twice the policy's parameters (1.1M vs 0.52M): wider, the same depth and tokenizer.
TEACHER_SPEC = TinyModelSpec(hidden_size=192, num_heads=3, num_kv_heads=None, intermediate_size=512)


def teacher_examples(prompts: list[str], tokenizer, count: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """`count` (input ids, labels) rows: templated prompt + correct answer + EOS, labels on the answer."""
    rng = random.Random(f"teacher-{seed}")
    rows = []
    for _ in range(count):
        prompt = rng.choice(prompts)
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(correct_response(prompt, rng), add_special_tokens=False)["input_ids"]
        answer_ids = answer_ids + [tokenizer.eos_token_id]
        rows.append((prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids))
    return rows


def _right_pad(rows: list[tuple[list[int], list[int]]], pad_id: int):
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, :len(row_ids)] = torch.tensor(row_ids)
        labels[i, :len(row_labels)] = torch.tensor(row_labels)
        mask[i, :len(row_ids)] = 1
    return ids, labels, mask


def train_teacher(model, tokenizer, prompts: list[str], seed: int = 0, steps: int = 40, batch_size: int = 32,
                  learning_rate: float = 3e-3, examples: int = 2000) -> dict:
    """Train `model` in place on correct answers to `prompts`; returns {"seconds", "cpu_seconds", "final_loss"}."""
    rows = teacher_examples(prompts, tokenizer, examples, seed)

    def batch_loss() -> torch.Tensor:
        index = torch.randint(len(rows), (batch_size,)).tolist()
        ids, labels, mask = _right_pad([rows[i] for i in index], tokenizer.pad_token_id)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return sft_loss(logits, labels)[0]

    return fit_in_place(model, batch_loss, steps, learning_rate, warmup_steps=10, seed=seed, tail=10)
