"""Evaluation rows must not be training rows: normalized-text hashing of both sides.

Normalization (Unicode NFKC, case-folded, whitespace collapsed) makes "Write the letter b."
and " write  the letter B." the same row. A held-out row is compared by its prompt (the prompt
field, or the text of a chat's messages); a general-ability probe line is compared with every
text field of every training row (prompt, response, chosen, rejected, message contents).
"""
from __future__ import annotations

import hashlib
import unicodedata
from typing import Iterable, Optional

from rlhf.data.reader import DataError


def normalize_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def row_prompt(row: dict, prompt_key: str, messages_key: str) -> Optional[str]:
    """The text that identifies a row: its prompt, or the contents of its chat messages."""
    value = row.get(prompt_key, row.get(messages_key))
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(str(m.get("content", "")) for m in value if isinstance(m, dict))
    return None


def row_texts(row: dict) -> list[str]:
    """Every text a row carries (string fields, chat message contents)."""
    texts = []
    for value in row.values():
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts += [str(m["content"]) for m in value if isinstance(m, dict) and isinstance(m.get("content"), str)]
    return texts


def shared_rows(train: Iterable[tuple[int, str]], held_out: Iterable[tuple[int, str]]) -> list[tuple[int, int]]:
    """(held-out row, training row) for each held-out text whose hash a training text has."""
    first_train_row: dict[str, int] = {}
    for number, text in train:
        first_train_row.setdefault(text_hash(text), number)
    return [(number, first_train_row[h]) for number, text in held_out
            if (h := text_hash(text)) in first_train_row]


def overlap_error(eval_path: str, train_path: str, pairs: list[tuple[int, int]], what: str,
                  examples: int = 5) -> DataError:
    shown = ", ".join(f"{eval_path}:{e} = {train_path}:{t}" for e, t in pairs[:examples])
    more = f" (and {len(pairs) - examples} more)" if len(pairs) > examples else ""
    return DataError(f"evaluation data share {len(pairs)} rows with the training data ({what}, normalized "
                     f"text hash): {shown}{more}; remove them from one side")


def _raw(path: str) -> list[tuple[int, dict]]:
    from rlhf.data.reader import read_rows

    return read_rows(path, lambda row: row, on_bad_row="skip")


def check_held_out(data, train_rows: Optional[set[int]] = None, eval_rows: Optional[set[int]] = None) -> None:
    """The held-out split shares no prompt with the training rows: `data.eval_path` against
    `data.train_path`, or with `data.eval_fraction` the held-out row numbers `eval_rows` of the
    training file against its `train_rows` (duplicate rows can land on both sides)."""
    rows = _raw(data.train_path)

    def prompts_of(pairs):
        return [(n, p) for n, r in pairs if (p := row_prompt(r, data.prompt_key, data.messages_key)) is not None]

    used = [(n, r) for n, r in rows if train_rows is None or n in train_rows]
    if data.eval_path:
        found = shared_rows(prompts_of(used), prompts_of(_raw(data.eval_path)))
        if found:
            raise overlap_error(data.eval_path, data.train_path, found, "held-out split, by prompt")
    elif eval_rows is not None:
        found = shared_rows(prompts_of(used), prompts_of([(n, r) for n, r in rows if n in eval_rows]))
        if found:
            raise overlap_error(f"{data.train_path} (held-out rows)", data.train_path, found,
                                "data.eval_fraction split, by prompt: duplicate rows landed on both sides")


def check_eval_data(cfg) -> None:
    """Raise DataError naming both files and example rows when an evaluation row is a training row:
    `data.eval_path` by prompt, the general-ability sets (`eval.general_text_path`,
    `eval.general_prompts_path`) against every text of every training row."""
    from rlhf.evaluation.probe import read_general_prompts, read_general_text

    if cfg.data.eval_path:
        check_held_out(cfg.data)
    if not cfg.eval.general_probe:
        return
    train_texts = [(n, t) for n, r in _raw(cfg.data.train_path) for t in row_texts(r)]
    if cfg.eval.general_text_path:
        found = shared_rows(train_texts, read_general_text(cfg.eval.general_text_path))
        if found:
            raise overlap_error(cfg.eval.general_text_path, cfg.data.train_path, found, "general text")
    if cfg.eval.general_prompts_path:
        general = read_general_prompts(cfg.eval.general_prompts_path)
        found = shared_rows(train_texts, [(n, p) for n, p, _ in general])
        if found:
            raise overlap_error(cfg.eval.general_prompts_path, cfg.data.train_path, found, "general prompts")
