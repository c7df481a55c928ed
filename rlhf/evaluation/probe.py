"""The general-ability probe: perplexity on held-out general text and general prompts whose
greedy continuation a function checks.

The probe measures the language model itself, so it reads plain text (bos + text, no chat
template). The model-side loops (`text_nll`, `greedy_continuations`) run inside the policy
actors on whatever module they hold (DeepSpeed ZeRO-3 shards, LoRA); every replica runs the same
rows so ZeRO-3's gathers stay in step, and the driver reads rank 0's answer.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Callable

import torch

from rlhf.data.examples import document_ids
from rlhf.data.reader import read_rows, read_text_lines, require_text
from rlhf.evaluation.scores import ACCURACY, PERPLEXITY, perplexity
from rlhf.models.forward import causal_lm_logits

ROWS_PER_FORWARD = 32


def read_general_text(path: str) -> list[tuple[int, str]]:
    """(line number, text) of each non-empty line of the held-out general text."""
    return read_text_lines(path, "eval.general_text_path")


def read_general_prompts(path: str) -> list[tuple[int, str, str]]:
    """(row, prompt, answer) of a JSONL/JSON/Parquet file of {"prompt", "answer"} rows."""
    return [(n, p, a) for n, (p, a) in read_rows(path, lambda row: (require_text(row, "prompt"),
                                                                     require_text(row, "answer")))]


def first_word_matches(response: str, answer: str) -> bool:
    """The continuation's first word, lower-cased and stripped of punctuation, is the answer."""
    words = re.findall(r"[A-Za-z0-9']+", response.lower())
    return bool(words) and words[0] == answer.strip().lower()


def load_checker(spec: str) -> Callable[[str, str], bool]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


# ------------------------------------------------------------------ model side (in the actors)
@torch.no_grad()
def text_nll(model, rows: list[list[int]], pad_id: int) -> tuple[float, int]:
    """Summed negative log-likelihood of every token after the first, and the number of those tokens."""
    nll, tokens = 0.0, 0
    for start in range(0, len(rows), ROWS_PER_FORWARD):
        chunk = rows[start:start + ROWS_PER_FORWARD]
        width = max(len(r) for r in chunk)
        ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in chunk], device=model.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in chunk], device=model.device)
        logprobs = torch.log_softmax(causal_lm_logits(model, ids, mask)[:, :-1].float(), dim=-1)
        token_logprobs = logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        nll -= float((token_logprobs * mask[:, 1:]).sum())
        tokens += int(mask[:, 1:].sum())
    return nll, tokens


@torch.no_grad()
def greedy_continuations(model, prompts: list[list[int]], max_new_tokens: int, pad_id: int) -> list[list[int]]:
    """`max_new_tokens` argmax tokens after each (left-padded) prompt: a fixed number of forwards."""
    out = []
    for start in range(0, len(prompts), ROWS_PER_FORWARD):
        chunk = prompts[start:start + ROWS_PER_FORWARD]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in chunk], device=model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=model.device)
        for _ in range(max_new_tokens):
            next_ids = causal_lm_logits(model, ids, mask)[:, -1].argmax(dim=-1, keepdim=True)
            ids = torch.cat([ids, next_ids], dim=1)
            mask = torch.cat([mask, torch.ones_like(next_ids)], dim=1)
        out += ids[:, width:].tolist()
    return out


def run_probe(model, text_rows: list[list[int]], prompt_rows: list[list[int]], max_new_tokens: int,
              pad_id: int) -> dict:
    """What an actor returns: {"nll", "tokens", "continuations"}."""
    was_training = model.training
    model.eval()
    try:
        nll, tokens = text_nll(model, text_rows, pad_id) if text_rows else (0.0, 0)
        continuations = greedy_continuations(model, prompt_rows, max_new_tokens, pad_id) if prompt_rows else []
    finally:
        model.train(was_training)
    return {"nll": nll, "tokens": tokens, "continuations": continuations}


# ------------------------------------------------------------------ driver side
@dataclass
class GeneralProbe:
    """The tokenized general sets of a run, and how to turn an actor's answer into metrics."""

    text_rows: list[list[int]]
    prompt_rows: list[list[int]]
    answers: list[str]
    max_new_tokens: int
    pad_id: int
    decode: Callable[[list[int]], str]
    check: Callable[[str, str], bool]

    @classmethod
    def from_config(cls, eval_cfg, tokenizer) -> "GeneralProbe | None":
        if not (eval_cfg.general_text_path or eval_cfg.general_prompts_path):
            return None
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []

        def encode(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False)["input_ids"]

        limit = eval_cfg.max_samples or None
        texts = read_general_text(eval_cfg.general_text_path)[:limit] if eval_cfg.general_text_path else []
        prompts = read_general_prompts(eval_cfg.general_prompts_path)[:limit] if eval_cfg.general_prompts_path else []
        return cls(text_rows=[document_ids(tokenizer, t) for _, t in texts],
                   prompt_rows=[bos + encode(p) for _, p, _ in prompts], answers=[a for _, _, a in prompts],
                   max_new_tokens=eval_cfg.max_new_tokens, pad_id=tokenizer.pad_token_id,
                   decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
                   check=load_checker(eval_cfg.general_checker))

    def actor_args(self) -> tuple:
        return self.text_rows, self.prompt_rows, self.max_new_tokens, self.pad_id

    def metrics(self, result: dict) -> dict[str, float]:
        out = {}
        if self.text_rows:
            out[PERPLEXITY] = perplexity(result["nll"], result["tokens"])
        if self.prompt_rows:
            right = [bool(self.check(self.decode(ids), answer))
                     for ids, answer in zip(result["continuations"], self.answers)]
            out[ACCURACY] = sum(right) / len(right)
        return out
