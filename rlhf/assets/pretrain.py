"""A tiny "pre-trained" base model and the general-ability probe sets that measure what it knows.

The default tiny policy is randomly initialised, so it has no general ability to lose. For the
forgetting gate (rlhf.evaluation) we need a starting model that does: `base/` is the tiny Llama
trained for a few CPU-seconds on the packaged corpus (plain text, bos + line + eos). It then
(a) has a perplexity on the held-out general text (`data/general_eval.txt`, lines that are not in
the corpus) far below a random model's, and (b) completes most corpus sentences it was trained
on: `data/general_prompts.jsonl` holds those sentence starts with the next word as `answer`,
checked by `rlhf.evaluation.probe:first_word_matches`. Fine-tuning hard on a narrow task erases
both, which is what the gate measures. Training is seeded and single-threaded (reproducible).
"""
from __future__ import annotations

import random

import torch

from rlhf.assets.fit import fit_in_place
from rlhf.models.forward import causal_lm_logits

PROMPTS_PER_LINE_EVERY = 4
"""Every 4th corpus line of at least 8 words gives a general prompt (about 70 prompts)."""


def corpus_examples(tokenizer, lines: list[str]) -> list[list[int]]:
    """bos + line + eos token ids for each line (the tokenizer adds no special tokens itself)."""
    return [[tokenizer.bos_token_id, *tokenizer(line, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
            for line in lines]


def general_prompt_rows(lines: list[str]) -> list[dict]:
    """{"prompt", "answer"} rows: a corpus sentence cut before one of its last words, and that word.

    The cut is at the last word of at least 3 letters that leaves a prompt of at least 6 words, so
    the answer is a content word the sentence makes predictable, not a final "it" or "a".
    """
    rows = []
    candidates = [line for line in lines if len(line.split()) >= 8]
    for line in candidates[::PROMPTS_PER_LINE_EVERY]:
        words = line.split()
        for cut in range(len(words) - 1, 5, -1):
            answer = words[cut].strip(".,;:!?'\"").lower()
            if len(answer) >= 3 and answer.isalpha():
                rows.append({"prompt": " ".join(words[:cut]), "answer": answer})
                break
    return rows


def pretrain_base(model, tokenizer, lines: list[str], seed: int = 0, steps: int = 200, batch_size: int = 16,
                  learning_rate: float = 3e-3) -> dict:
    """Train `model` in place on the corpus lines; returns {"seconds", "final_loss"}."""
    examples = corpus_examples(tokenizer, lines)
    pad = tokenizer.pad_token_id
    rng = random.Random(f"pretrain-{seed}")

    def batch_loss() -> torch.Tensor:
        batch = [examples[rng.randrange(len(examples))] for _ in range(batch_size)]
        width = max(len(ids) for ids in batch)
        ids = torch.tensor([row + [pad] * (width - len(row)) for row in batch])
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in batch])
        logits = causal_lm_logits(model, ids, mask)[:, :-1]
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    return fit_in_place(model, batch_loss, steps, learning_rate, warmup_steps=20, seed=seed)
