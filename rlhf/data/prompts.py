"""Prompts for rollouts: read, wrap in the chat template, tokenize, filter by length, sample.

The same tokenized prompts feed generation and training, so the oversize policy
applies identically on both sides (RELIABILITY.md test 7). A prompt is oversize when it
is longer than `data.max_prompt_tokens`, or when it plus `rollout.max_new_tokens` would
not fit the model's context (`max_position_embeddings`): engines such as vLLM fail the
whole batch on such a prompt, so it is handled here, before generation, by the same
`data.on_oversize` policy (error, drop, or truncate from the left), and counted.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from rlhf.data.reader import DataError, ReadReport, read_rows, require_text

from rlhf.seeds import epoch_seed

if TYPE_CHECKING:
    from rlhf.config import DataConfig

logger = logging.getLogger(__name__)


@dataclass
class Prompt:
    row: int
    """1-based row in the source file."""
    text: str
    """The prompt as the engine sees it (chat template applied)."""
    token_ids: list[int]
    columns: dict = field(default_factory=dict)
    """The row's other fields (e.g. a reference `answer`), handed to reward sources and environments."""


def prompt_tokenizer(model_path: str, data, trust_remote_code: bool = False):
    """The model's tokenizer, with the chat template `data` (a DataConfig) asks for when prompts are wrapped."""
    from rlhf.models.loading import load_tokenizer

    tokenizer = load_tokenizer(model_path, trust_remote_code)
    if data.apply_chat_template:
        ensure_chat_template(tokenizer, data.chat_template_path, model_path)
    return tokenizer


def ensure_chat_template(tokenizer, template_path: Optional[str], model_path: str) -> None:
    """Use `template_path` if given; otherwise the tokenizer must have a template of its own."""
    if template_path:
        with open(template_path, encoding="utf-8") as fh:
            tokenizer.chat_template = fh.read()
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"the tokenizer of {model_path} has no chat template: set data.chat_template_path to a Jinja "
            "template file, or data.apply_chat_template=false to feed prompts as raw text"
        )


def _parse_prompt(key: str):
    def parse(row: dict):
        value = row.get(key)
        if isinstance(value, list):  # chat messages
            for i, msg in enumerate(value):
                if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
                    raise ValueError(f"field {key!r}[{i}] must be a message with 'role' and 'content'")
            if not value:
                raise ValueError(f"field {key!r} is an empty message list")
            return value
        return require_text(row, key)

    return parse


def load_prompts(path: str, tokenizer, data: "DataConfig", context_limit: Optional[int] = None,
                 max_new_tokens: int = 0) -> tuple[list[Prompt], dict]:
    """Tokenized prompts of `path`, read as the `data` section says (prompt_key, max_prompt_tokens,
    on_oversize, on_bad_row, apply_chat_template), and a report {"rows", "skipped_bad", "first_bad" (the
    first few bad rows, `file:row: what`), "dropped_oversize", "truncated", "prompt_limit"}.

    `context_limit` is the model's maximum sequence length (None: unknown, not checked); a
    prompt may then use at most `context_limit - max_new_tokens` tokens.
    """
    prompt_key, max_prompt_tokens, on_oversize = data.prompt_key, data.max_prompt_tokens, data.on_oversize
    on_bad_row, apply_chat_template = data.on_bad_row, data.apply_chat_template
    limit, why = prompt_token_limit(max_prompt_tokens, context_limit, max_new_tokens)
    report = ReadReport()
    parse = _parse_prompt(prompt_key)
    rows = read_rows(path, lambda row: (parse(row), {k: v for k, v in row.items() if k != prompt_key}),
                     on_bad_row, report)
    prompts, dropped, truncated = [], 0, 0
    for number, (value, columns) in rows:
        if apply_chat_template:
            messages = value if isinstance(value, list) else [{"role": "user", "content": value}]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = value if isinstance(value, str) else "\n".join(m["content"] for m in value)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > limit:
            if on_oversize == "error":
                raise DataError(f"{path}:{number}: prompt has {len(ids)} tokens, over {why} (data.on_oversize=error; "
                                "set it to drop or truncate to go on without it)")
            if on_oversize == "drop":
                dropped += 1
                continue
            ids = ids[-limit:]  # keep the end: the generation prompt must survive
            text = tokenizer.decode(ids)
            truncated += 1
        prompts.append(Prompt(row=number, text=text, token_ids=ids, columns=columns))
    if dropped or truncated:
        logger.warning("%s: %s %d prompts over %s", path, "dropped" if dropped else "truncated", dropped + truncated, why)
    if not prompts:
        raise DataError(f"{path}: every prompt is over {why}")
    counts = {"rows": len(prompts), "skipped_bad": report.skipped, "first_bad": report.first_bad,
              "dropped_oversize": dropped, "truncated": truncated, "prompt_limit": limit}
    return prompts, counts


def prompt_token_limit(max_prompt_tokens: int, context_limit: Optional[int], max_new_tokens: int) -> tuple[int, str]:
    """The longest prompt allowed, and which limit sets it (for messages)."""
    if context_limit is None or context_limit - max_new_tokens >= max_prompt_tokens:
        return max_prompt_tokens, f"data.max_prompt_tokens={max_prompt_tokens}"
    room = context_limit - max_new_tokens
    if room < 1:
        raise DataError(f"rollout.max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
                        f"context of {context_limit} tokens (max_position_embeddings)")
    return room, (f"{room} tokens (the model's max_position_embeddings={context_limit} minus "
                  f"rollout.max_new_tokens={max_new_tokens})")


class PromptSampler:
    """Walks the prompts in epochs, reshuffled per epoch from the seed; its position survives resume."""

    def __init__(self, prompts: list[Prompt], seed: int, shuffle: bool = True) -> None:
        self.prompts = prompts
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self._order = self._make_order()

    def _make_order(self) -> list[int]:
        order = list(range(len(self.prompts)))
        if self.shuffle:
            random.Random(epoch_seed(self.seed, self.epoch)).shuffle(order)
        return order

    def next_batch(self, size: int) -> list[Prompt]:
        batch = []
        while len(batch) < size:
            if self.position >= len(self._order):
                self.epoch += 1
                self.position = 0
                self._order = self._make_order()
            batch.append(self.prompts[self._order[self.position]])
            self.position += 1
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = self._make_order()
