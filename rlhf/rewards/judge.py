"""AI feedback: a judge model grades each response against a rubric (RLAIF, Bai et al. 2022; Lee et al. 2023).

Two backends behind the same `score`:
- `LocalJudge`: a causal LM in this process. It reads the next-token distribution at the
  end of the rendered rubric, renormalised over the rubric's answer tokens, and returns
  the expected score (Liu et al. 2023, G-Eval, weight the answer tokens by probability
  instead of sampling one). No generation, one forward per micro-batch.
- `ApiJudge`: an OpenAI-compatible chat-completions endpoint; the reply is parsed for
  the first rubric answer. A reply without one is a failed attempt: retried, then an
  error naming the endpoint, never a silent 0.
Pairwise use (RLAIF's preferred-of-two) is "score each, compare": call `score` on every
candidate of a prompt.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import torch

from rlhf.models.forward import causal_lm_logits
from rlhf.models.loading import load_causal_lm, load_tokenizer
from rlhf.rewards.base import check_scores
from rlhf.rewards.remote import RetryPolicy, post_json, read_api_key
from rlhf.rewards.rubric import Rubric

logger = logging.getLogger(__name__)


def expected_answer_value(last_logits: torch.Tensor, answer_ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Sum_k softmax(last_logits[:, answer_ids])_k * values_k.

    last_logits [B, V] (the judge's logits for the next token), answer_ids [K], values [K] -> [B].
    The softmax runs over the K answers only, so probability the judge puts elsewhere is ignored.
    """
    probs = torch.softmax(last_logits[:, answer_ids].float(), dim=-1)
    return probs @ values.float()


def judge_input_ids(tokenizer, text: str) -> list[int]:
    """Token ids the local judge reads: bos (if the tokenizer has one) then the rendered rubric."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + ids


def answer_token_ids(tokenizer, rubric: Rubric, where: str) -> list[int]:
    """One token id per rubric answer, or ValueError naming an answer that is several tokens."""
    ids = []
    for answer in rubric.answers:
        tokens = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            raise ValueError(f"rubric {rubric.path}: answer {answer!r} is {len(tokens)} tokens for the judge "
                             f"{where}; a local judge needs single-token answers")
        ids.append(tokens[0])
    return ids


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] ids and attention mask, rows right-aligned so every last token sits at position -1."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids, mask


class LocalJudge:
    def __init__(self, model_path: str, rubric: Rubric, dtype: str = "float32", trust_remote_code: bool = False,
                 micro_batch_size: int = 32, device: str = "cpu") -> None:
        self.name = f"judge:{model_path}"
        self.rubric = rubric
        self.tokenizer = load_tokenizer(model_path, trust_remote_code)
        self.model = load_causal_lm(model_path, dtype, trust_remote_code).to(device).eval()
        self.answer_ids = torch.tensor(answer_token_ids(self.tokenizer, rubric, model_path))
        self.values = torch.tensor(list(rubric.answers.values()))
        self.max_positions: Optional[int] = getattr(self.model.config, "max_position_embeddings", None)
        self.micro_batch_size = micro_batch_size
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id

    @torch.no_grad()
    def score(self, prompts, responses, sequences=None, attention_mask=None, columns=None) -> torch.Tensor:
        rows = [judge_input_ids(self.tokenizer, self.rubric.render(p, r, f))
                for p, r, f in zip(prompts, responses, row_fields(columns, len(responses)))]
        scores = torch.full((len(rows),), float("nan"))
        fits = [i for i, r in enumerate(rows) if self.max_positions is None or len(r) <= self.max_positions]
        if len(fits) < len(rows):
            # NaN, not 0: the trainer leaves such samples out and counts them (reward/invalid).
            logger.warning("%s: %d judge prompts exceed max_position_embeddings=%s; scored NaN",
                           self.name, len(rows) - len(fits), self.max_positions)
        for start in range(0, len(fits), self.micro_batch_size):
            index = fits[start:start + self.micro_batch_size]
            ids, mask = left_pad([rows[i] for i in index], self.pad_id)
            last = causal_lm_logits(self.model, ids.to(self.model.device), mask.to(self.model.device))[:, -1].cpu()
            scores[index] = expected_answer_value(last, self.answer_ids, self.values)
        return check_scores(scores, len(responses), self.name)


def row_fields(columns: Optional[dict[str, list]], n: int) -> list[dict]:
    """{field: [values]} back to one dict per response (the rubric fills one response at a time)."""
    return [{name: values[i] for name, values in (columns or {}).items()} for i in range(n)]


def reply_text(reply) -> str:
    """The assistant message of a chat-completions reply, or ValueError."""
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"not a chat-completions reply: {str(reply)[:120]}") from None
    if not isinstance(content, str):
        raise ValueError(f"reply content is {type(content).__name__}, not text")
    return content


class ApiJudge:
    def __init__(self, base_url: str, model: str, rubric: Rubric, policy: RetryPolicy,
                 api_key_env: Optional[str] = None, max_tokens: int = 8, concurrency: int = 4) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.name = f"judge:{self.url}"
        self.model = model
        self.rubric = rubric
        self.policy = policy
        self.max_tokens = max_tokens
        self.concurrency = concurrency
        self._api_key = read_api_key(api_key_env, "reward.judge.api_key_env")

    def __repr__(self) -> str:  # never show the key
        return f"ApiJudge({self.url!r}, model={self.model!r})"

    def _score_one(self, prompt: str, response: str, fields: Optional[dict] = None) -> float:
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": self.rubric.render(prompt, response, fields)}],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        return post_json(self.url, payload, self.policy, check=lambda r: self.rubric.parse_reply(reply_text(r)),
                         api_key=self._api_key)

    def score(self, prompts, responses, sequences=None, attention_mask=None, columns=None) -> torch.Tensor:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            scores = list(pool.map(self._score_one, prompts, responses, row_fields(columns, len(responses))))
        return check_scores(scores, len(responses), self.name)
