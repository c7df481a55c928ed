"""A tiny AI judge for the letters task, trained in seconds so tests have a real local judge.

The judge is the tiny causal LM, trained to answer the packaged rubric
(`rlhf/rewards/rubrics/letters.yaml`) with the digit round(9 * letter_score): the loss is
the cross-entropy of the next token at the end of the rendered rubric, exactly where
`LocalJudge` reads its answer distribution. Responses cover what a policy emits along
training: random token soup (an untrained policy), a mix of the right letter with others
at every fraction, wrong letters, and chatter; prompts appear both as raw text and with the
chat template applied (what PPO passes to reward sources). Training is seeded and runs
on one thread, so the same seed gives the same judge on the same machine.
"""
from __future__ import annotations

import random

import torch

from rlhf.assets.fit import fit_in_place
from rlhf.assets.datasets import _CHATTER
from rlhf.assets.models import TinyModelSpec
from rlhf.models.forward import causal_lm_logits
from rlhf.rewards.judge import answer_token_ids, judge_input_ids, left_pad
from rlhf.rewards.rubric import Rubric
from rlhf.tasks import LETTERS, letter_score, parse_target_letter

ALPHABET = "abcdefghijklmnopqrstuvwxyz"

# Half the policy's width: training costs about 10 CPU-seconds (measured on the shared 2-core
# machine) and grades held-out answers with a correlation of about 0.7 to letter_reward.
JUDGE_SPEC = TinyModelSpec(hidden_size=64, num_heads=2, num_kv_heads=None, intermediate_size=192)


def sample_response(prompt: str, rng: random.Random, vocab_texts: list[str]) -> str:
    """A response of random quality for a letters prompt."""
    kind = rng.random()
    if kind < 0.25:  # what an untrained policy writes: a few random tokens
        return "".join(rng.choice(vocab_texts) for _ in range(rng.randint(1, 12)))
    if kind < 0.3:
        return rng.choice(_CHATTER)
    target = parse_target_letter(prompt)
    n = rng.randint(1, 10)
    right = rng.randint(0, n)
    others = [c for c in (LETTERS if rng.random() < 0.5 else ALPHABET) if c != target]
    chars = [target] * right + [rng.choice(others) for _ in range(n - right)]
    rng.shuffle(chars)
    return (" " if rng.random() < 0.5 else "").join(chars)


def judge_examples(prompts: list[str], tokenizer, rubric: Rubric, count: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """`count` (input ids, answer token id) pairs labelled by the letters reward."""
    rng = random.Random(f"judge-{seed}")
    digit_ids = answer_token_ids(tokenizer, rubric, "tokenizer")
    values = list(rubric.answers.values())
    special = set(tokenizer.all_special_ids)
    vocab_texts = [tokenizer.decode([i]) for i in range(len(tokenizer)) if i not in special]
    rows, labels = [], []
    for _ in range(count):
        prompt = rng.choice(prompts)
        response = sample_response(prompt, rng, vocab_texts)
        score = letter_score(parse_target_letter(prompt), response)
        if rng.random() < 0.7:  # PPO hands reward sources the chat-formatted prompt
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                   add_generation_prompt=True)
        nearest = min(range(len(values)), key=lambda k: abs(values[k] - score))
        rows.append(judge_input_ids(tokenizer, rubric.render(prompt, response)))
        labels.append(digit_ids[nearest])
    return rows, labels


def train_judge(model, tokenizer, rubric: Rubric, prompts: list[str], seed: int = 0, steps: int = 150,
                batch_size: int = 32, learning_rate: float = 4e-3, examples: int = 6000) -> dict:
    """Train `model` in place on judge examples; returns {"seconds", "cpu_seconds", "final_loss"}."""
    rows, labels = judge_examples(prompts, tokenizer, rubric, examples, seed)
    pad = tokenizer.pad_token_id

    def batch_loss() -> torch.Tensor:
        index = torch.randint(len(rows), (batch_size,)).tolist()
        ids, mask = left_pad([rows[i] for i in index], pad)
        logits = causal_lm_logits(model, ids, mask)[:, -1]
        return torch.nn.functional.cross_entropy(logits, torch.tensor([labels[i] for i in index]))

    return fit_in_place(model, batch_loss, steps, learning_rate, warmup_steps=20, seed=seed)
