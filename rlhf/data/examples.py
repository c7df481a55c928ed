"""Offline training examples: SFT demonstrations and preference pairs, read and tokenized.

Responses are tokenized on their own and appended to the templated prompt's tokens, plus
the end-of-sequence token: exactly the token sequence the policy produces when it answers
that prompt at generation time (engine prompt ids, then sampled ids ending in EOS), so
what SFT and DPO train on is what the rollout engines and the reference score.
Multi-turn chats (`messages`) are tokenized through the chat template; the tokens each
assistant turn adds are found by rendering the chat up to that turn (see `encode_chat`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from rlhf.config import DataConfig
from rlhf.data.prompts import _parse_prompt
from rlhf.data.reader import DataError, ReadReport, read_rows, require_text
from rlhf.losses.sft import IGNORE_INDEX

logger = logging.getLogger(__name__)


@dataclass
class SFTExample:
    row: int
    """1-based row in the source file."""
    input_ids: list[int]
    labels: list[int]
    """The token where it is trained on (response), IGNORE_INDEX elsewhere (prompt)."""


@dataclass
class PreferenceExample:
    row: int
    prompt: str
    """The prompt as the model sees it (chat template applied)."""
    prompt_ids: list[int]
    chosen_ids: list[int]
    """Preferred response tokens, ending with EOS."""
    rejected_ids: list[int]


class OversizeError(ValueError):
    pass


def render_prompt(tokenizer, value, apply_chat_template: bool) -> str:
    """A prompt string or message list as the engine sees it (same rule as `load_prompts`)."""
    if apply_chat_template:
        messages = value if isinstance(value, list) else [{"role": "user", "content": value}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return value if isinstance(value, str) else "\n".join(m["content"] for m in value)


def document_ids(tokenizer, text: str) -> list[int]:
    """bos + text + eos, as a causal LM reads plain text (no chat template); a token the tokenizer lacks is left out."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return bos + tokenizer(text, add_special_tokens=False)["input_ids"] + eos


def encode_response(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def labelled_example(prompt_ids: list[int], response_ids: list[int]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of prompt + response with labels only on the response."""
    return prompt_ids + response_ids, [IGNORE_INDEX] * len(prompt_ids) + list(response_ids)


def encode_chat(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a chat, labels on the tokens of every assistant turn.

    The template renders the chat up to each turn; an assistant turn's tokens are those its
    rendering adds to the rendering before it with the generation prompt. A template whose
    renderings are not prefixes of each other cannot be split this way and is an error.
    """
    def ids(msgs, add_generation_prompt=False):
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("the chat has no assistant message to train on")
    full = ids(messages)
    labels = [IGNORE_INDEX] * len(full)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start, end = len(ids(messages[:i], add_generation_prompt=True)), len(ids(messages[:i + 1]))
        if full[:end] != ids(messages[:i + 1]) or start > end:
            raise ValueError("the chat template does not render a chat as a prefix of its continuation; "
                             "use prompt/response rows instead")
        labels[start:end] = full[start:end]
    return full, labels


def fit_length(ids: list[int], limit: int, on_oversize: str, keep_end: bool, what: str) -> list[int]:
    """`ids` within `limit` tokens: unchanged, truncated (keeping the end or the start), or an error."""
    if len(ids) <= limit:
        return ids
    if on_oversize == "truncate":
        return ids[-limit:] if keep_end else ids[:limit]
    raise OversizeError(f"{what} has {len(ids)} tokens, over the limit of {limit}")


class _Counts:
    def __init__(self, report: ReadReport) -> None:
        self.report, self.dropped, self.truncated = report, 0, 0

    def as_dict(self, kept: int) -> dict:
        return {"rows": kept, "skipped_bad": self.report.skipped, "first_bad": self.report.first_bad,
                "dropped_oversize": self.dropped, "truncated": self.truncated}


def _keep(path: str, number: int, build, data: DataConfig, counts: _Counts):
    """Run `build()` under the oversize policy: the example, or None when it is dropped."""
    try:
        example, truncated = build()
    except OversizeError as err:
        if data.on_oversize == "error":
            raise DataError(f"{path}:{number}: {err} (data.max_prompt_tokens / data.max_response_tokens)") from None
        counts.dropped += 1
        return None
    counts.truncated += int(truncated)
    return example


def _finish(path: str, examples: list, counts: _Counts) -> tuple[list, dict[str, int]]:
    if counts.dropped:
        logger.warning("%s: dropped %d examples over the length limits", path, counts.dropped)
    if not examples:
        raise DataError(f"{path}: no example fits data.max_prompt_tokens / data.max_response_tokens")
    return examples, counts.as_dict(len(examples))


def _prompt_ids(tokenizer, value, data: DataConfig) -> tuple[list[int], str, bool]:
    text = render_prompt(tokenizer, value, data.apply_chat_template)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    fitted = fit_length(ids, data.max_prompt_tokens, data.on_oversize, keep_end=True, what="prompt")
    return fitted, (text if fitted is ids else tokenizer.decode(fitted)), fitted is not ids


def load_sft_examples(path: str, tokenizer, data: DataConfig) -> tuple[list[SFTExample], dict[str, int]]:
    """Rows of {prompt_key, response_key} or {messages_key: [...]} as labelled token sequences."""
    prompt_parse = _parse_prompt(data.prompt_key)

    def parse(row: dict):
        if data.prompt_key in row:
            return prompt_parse(row), require_text(row, data.response_key)
        if data.messages_key in row:
            messages = _parse_prompt(data.messages_key)(row)
            if isinstance(messages, str):
                raise TypeError(f"field {data.messages_key!r} must be a list of messages")
            return messages, None
        raise KeyError(f"missing field {data.prompt_key!r} (data.prompt_key) or {data.messages_key!r} "
                       f"(data.messages_key); fields: {', '.join(sorted(row))}")

    counts = _Counts(ReadReport())
    rows = read_rows(path, parse, data.on_bad_row, counts.report)
    limit = data.max_prompt_tokens + data.max_response_tokens
    examples = []
    for number, (prompt, response) in rows:
        def build():
            if response is None:
                if not data.apply_chat_template:
                    raise ValueError("chat messages need data.apply_chat_template=true")
                ids, labels = encode_chat(tokenizer, prompt)
                kept = fit_length(ids, limit, data.on_oversize, keep_end=False, what="chat")
                return SFTExample(number, kept, labels[:len(kept)]), len(kept) < len(ids)
            prompt_ids, _, cut = _prompt_ids(tokenizer, prompt, data)
            full = encode_response(tokenizer, response)
            response_ids = fit_length(full, data.max_response_tokens, data.on_oversize, keep_end=False,
                                      what="response")
            ids, labels = labelled_example(prompt_ids, response_ids)
            return SFTExample(number, ids, labels), cut or len(response_ids) < len(full)

        try:
            example = _keep(path, number, build, data, counts)
        except DataError:
            raise
        except ValueError as err:  # a chat the template cannot split
            raise DataError(f"{path}:{number}: {err}") from None
        if example is not None:
            examples.append(example)
    return _finish(path, examples, counts)


def load_preference_examples(path: str, tokenizer, data: DataConfig) -> tuple[list[PreferenceExample], dict[str, int]]:
    """Rows of {prompt_key, chosen_key, rejected_key} as tokenized pairs."""
    prompt_parse = _parse_prompt(data.prompt_key)

    def parse(row: dict):
        fields = []
        for key, name in ((data.chosen_key, "chosen_key"), (data.rejected_key, "rejected_key")):
            if key not in row:
                raise KeyError(f"missing field {key!r} (data.{name}; preference data needs prompt, chosen and "
                               f"rejected); fields: {', '.join(sorted(row))}")
            fields.append(require_text(row, key))
        return prompt_parse(row), fields[0], fields[1]

    counts = _Counts(ReadReport())
    rows = read_rows(path, parse, data.on_bad_row, counts.report)
    examples = []
    for number, (prompt, chosen, rejected) in rows:
        def build():
            prompt_ids, text, cut = _prompt_ids(tokenizer, prompt, data)
            responses, cuts = [], cut
            for what, response in (("chosen response", chosen), ("rejected response", rejected)):
                full = encode_response(tokenizer, response)
                fitted = fit_length(full, data.max_response_tokens, data.on_oversize, keep_end=False, what=what)
                responses.append(fitted)
                cuts = cuts or len(fitted) < len(full)
            return PreferenceExample(number, text, prompt_ids, responses[0], responses[1]), cuts

        example = _keep(path, number, build, data, counts)
        if example is not None:
            examples.append(example)
    return _finish(path, examples, counts)


def check_context(data: DataConfig, context_limit: Optional[int], virtual_tokens: int = 0) -> None:
    """An example of max_prompt_tokens + max_response_tokens (after prompt/prefix tuning's virtual
    tokens, which take positions too) must fit the model's positions."""
    total = data.max_prompt_tokens + data.max_response_tokens + virtual_tokens
    if context_limit is not None and total > context_limit:
        virtual = " + model.peft.num_virtual_tokens" if virtual_tokens else ""
        raise DataError(f"data.max_prompt_tokens + data.max_response_tokens{virtual} = {total} is over the model's "
                        f"context of {context_limit} tokens (max_position_embeddings); lower one of them")


def holdout_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded disjoint (train, eval) index lists over n items; eval gets round(n * fraction), at least 1.

    Each list is in ascending order; the same (n, fraction, seed) always gives the same split.
    """
    import random

    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    n_eval = max(1, round(n * fraction))
    if n_eval >= n:
        raise DataError(f"holding out {n_eval} of {n} rows leaves nothing to train on (data.eval_fraction)")
    order = list(range(n))
    random.Random(f"holdout-{seed}").shuffle(order)
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def train_and_eval(load, data: DataConfig, seed: int) -> tuple[list, Optional[list], dict]:
    """(train examples, eval examples or None, counts) from `data.eval_path` or `data.eval_fraction`."""
    train, counts = load(data.train_path)
    counts = {f"train_{k}": v for k, v in counts.items()}
    if data.eval_path:
        held_out, eval_counts = load(data.eval_path)
        counts.update({f"eval_{k}": v for k, v in eval_counts.items()})
        return train, held_out, counts
    if data.eval_fraction:
        train_idx, eval_idx = holdout_split(len(train), data.eval_fraction, seed)
        counts.update(train_rows=len(train_idx), eval_rows=len(eval_idx))
        from rlhf.evaluation.leakage import check_held_out

        check_held_out(data, {train[i].row for i in train_idx}, {train[i].row for i in eval_idx})
        return [train[i] for i in train_idx], [train[i] for i in eval_idx], counts
    return train, None, counts
