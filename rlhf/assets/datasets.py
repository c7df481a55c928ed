"""JSONL datasets for the "letters" task (see ``rlhf.tasks``), plus held-out general text.

Files written under ``OUT/data/`` (one JSON object per line, UTF-8):

- ``task_{train,eval}.jsonl``: ``{"prompt"}`` for on-policy RL;
- ``sft_{train,eval}.jsonl``: ``{"prompt", "response"}``, the response being correct;
- ``prefs_{train,eval}.jsonl``: ``{"prompt", "chosen", "rejected"}``, chosen correct and
  rejected a wrong-letter, garbled or chatty answer that scores strictly lower;
- ``sft_imperfect_train.jsonl``: the train prompts answered by an imperfect demonstrator, always
  in the right form but with the asked letter only half the time (the pipeline demo's SFT stage:
  SFT teaches the form, RL against a reward model the preference);
- ``prefs_contrast_train.jsonl``: ``prefs_train``'s pairs plus, per prompt, pairs that differ only
  in the letter (same count and spacing), so a reward model learns which letter was asked, not only
  what a letters answer looks like (the pipeline demo's reward model);
- ``pretrain_corpus.txt``: the corpus ``base`` was pre-trained on, one line each (a pre-training mix,
  ``data.ptx_path``, for runs that start from ``base``);
- ``general_eval.txt``: plain English lines that are not in the tokenizer corpus,
  for perplexity probes;
- ``general_prompts.jsonl``: ``{"prompt", "answer"}``, corpus sentence starts and their next word,
  which the pre-trained ``base`` model mostly completes (see ``rlhf.assets.pretrain``).

Prompts are the plain user text; the data pipeline applies the chat template. Every
eval prompt is absent from every train file, and each split holds the same number
of prompts per target letter, so eval reward is comparable across runs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

from rlhf.tasks import COUNT_WORDS, COUNTED_TEMPLATES, LETTERS, UNCOUNTED_TEMPLATES, letter_score, parse_target_letter

EVAL_PER_LETTER = 8

DATA_FILES = (
    "task_train.jsonl", "task_eval.jsonl",
    "sft_train.jsonl", "sft_eval.jsonl",
    "prefs_train.jsonl", "prefs_eval.jsonl",
    "sft_imperfect_train.jsonl", "prefs_contrast_train.jsonl",
    "general_eval.txt", "general_prompts.jsonl", "pretrain_corpus.txt",
    "agent_train.jsonl", "agent_eval.jsonl", "agent_sft_train.jsonl",  # rlhf.assets.agent_task
)

# Written for this project and kept out of corpus.txt, so the tokenizer (and any
# model pre-trained on the corpus) has never seen these exact lines.
GENERAL_EVAL_LINES: tuple[str, ...] = (
    "The bakery on the hill sells bread until the early afternoon.",
    "My uncle keeps bees behind his house and sells the honey at the market.",
    "We missed the last bus and had to walk home under the stars.",
    "The old oak tree in the square is older than the church.",
    "She folded the letter twice and put it in a white envelope.",
    "The kitchen smelled of onions, garlic and fresh bread.",
    "On rainy days the children build towers out of cushions.",
    "The fisherman mended his net while the sun went down.",
    "A small boat drifted slowly across the quiet bay.",
    "He wrote the shopping list on the back of an old ticket.",
    "The garden was full of bees and yellow flowers.",
    "Our train stopped for ten minutes in a field full of sheep.",
    "The teacher drew a large map of the town on the board.",
    "I found my grandmother's recipe book in a box in the attic.",
    "The first snow fell quietly during the night.",
    "In the morning the whole street was white and silent.",
    "The postman waved as he cycled past the school.",
    "They painted the kitchen a pale yellow colour.",
    "The dog waited by the door until everyone was ready to go.",
    "We shared a pot of tea and talked about the old days.",
    "The market closes early on Wednesdays in winter.",
    "A boy on a red bicycle rang his bell at the ducks.",
    "The sea was calm, and the sand was warm under our feet.",
    "My friend sent me a postcard with a picture of a lighthouse.",
    "The lamp on the desk gives a soft and steady light.",
    "After the rain, the air smelled clean and fresh.",
    "The library has a quiet room for people who want to study.",
    "We planted two apple trees at the bottom of the garden.",
    "The clock in the tower stopped at a quarter to five.",
    "Nobody knows exactly when it stopped or why.",
    "Please leave your boots by the door when you come in.",
    "Would you like another slice of cake?",
    "I will call you when I get to the station.",
    "The shop sells buttons, thread, needles and bright ribbons.",
    "Her cat sleeps on the windowsill every afternoon.",
    "The road to the coast winds between low green hills.",
    "Three, four, five, six, seven, eight, nine.",
    "The letters on the old sign had faded in the sun.",
    "He counted the steps up to the top of the tower: one hundred and twelve.",
    "We said goodbye at the gate and promised to write soon.",
)


def letter_prompts() -> list[str]:
    """Every distinct "letters" prompt, in a fixed order."""
    prompts = [
        t.format(c=c, n=word)
        for c in LETTERS
        for t in COUNTED_TEMPLATES
        for word in COUNT_WORDS.values()
    ]
    prompts += [t.format(c=c) for c in LETTERS for t in UNCOUNTED_TEMPLATES]
    return prompts


def split_prompts(seed: int = 0, eval_per_letter: int = EVAL_PER_LETTER) -> tuple[list[str], list[str]]:
    """Disjoint (train, eval) prompt lists with ``eval_per_letter`` eval prompts per letter."""
    rng = random.Random(f"split-{seed}")
    by_letter: dict[str, list[str]] = {c: [] for c in LETTERS}
    for p in letter_prompts():
        by_letter[parse_target_letter(p)].append(p)
    train: list[str] = []
    eval_: list[str] = []
    for c in LETTERS:
        group = by_letter[c]
        rng.shuffle(group)
        eval_ += group[:eval_per_letter]
        train += group[eval_per_letter:]
    rng.shuffle(train)
    rng.shuffle(eval_)
    return train, eval_


def _requested_count(prompt: str, rng: random.Random) -> int:
    for n, word in COUNT_WORDS.items():
        if f" {word} " in f" {prompt} ":
            return n
    return rng.randint(3, 8)


def _render(letters: list[str], spaced: bool) -> str:
    return (" " if spaced else "").join(letters)


def correct_response(prompt: str, rng: random.Random) -> str:
    """A full-reward answer: the target letter, the requested number of times, spaced or solid."""
    c = parse_target_letter(prompt)
    return _render([c] * _requested_count(prompt, rng), spaced=rng.random() < 0.5)


_CHATTER = (
    "Sure, here it is.",
    "I do not know.",
    "Here you are.",
    "That is a nice letter.",
    "Okay.",
    "One, two, three.",
)


def rejected_response(prompt: str, rng: random.Random) -> str:
    """A worse answer: a wrong letter, the right letter garbled with others, or chatter."""
    c = parse_target_letter(prompt)
    n = _requested_count(prompt, rng)
    spaced = rng.random() < 0.5
    kind = rng.choice(("wrong_letter", "garbled", "chatter"))
    if kind == "wrong_letter":
        # Half the time a letter from the task set, so preference data teaches
        # the letters apart, not just "task letters good".
        pool = [x for x in LETTERS if x != c] if rng.random() < 0.5 else [
            x for x in "abcdefghijklmnopqrstuvwxyz" if x != c]
        return _render([rng.choice(pool)] * n, spaced)
    if kind == "garbled":
        others = [x for x in "abcdefghijklmnopqrstuvwxyz" if x != c]
        seq = [c] * n
        k = rng.randint(1, n - 1)  # at least one wrong, at least one right
        for i in rng.sample(range(n), k):
            seq[i] = rng.choice(others)
        return _render(seq, spaced)
    return rng.choice(_CHATTER)


def task_rows(prompts: Iterable[str]) -> list[dict]:
    return [{"prompt": p} for p in prompts]


def sft_rows(prompts: Iterable[str], rng: random.Random) -> list[dict]:
    return [{"prompt": p, "response": correct_response(p, rng)} for p in prompts]


def pref_rows(prompts: Iterable[str], rng: random.Random) -> list[dict]:
    rows = []
    for p in prompts:
        chosen = correct_response(p, rng)
        rejected = rejected_response(p, rng)
        c = parse_target_letter(p)
        # The reward function is the ground truth the preference labels must agree with.
        assert letter_score(c, chosen) > letter_score(c, rejected), (p, chosen, rejected)
        rows.append({"prompt": p, "chosen": chosen, "rejected": rejected})
    return rows


def _other_task_letter(target: str, rng: random.Random) -> str:
    return rng.choice([x for x in LETTERS if x != target])


def imperfect_sft_rows(prompts: Iterable[str], rng: random.Random, right_share: float = 0.5) -> list[dict]:
    """Demonstrations in the right form (one letter, the requested count) whose letter is the asked one
    with probability ``right_share``, else another task letter: imitating them cannot exceed the
    demonstrator, a reward model that knows the preference can."""
    rows = []
    for p in prompts:
        n, spaced = _requested_count(p, rng), rng.random() < 0.5
        c = parse_target_letter(p)
        letter = c if rng.random() < right_share else _other_task_letter(c, rng)
        rows.append({"prompt": p, "response": _render([letter] * n, spaced)})
    return rows


def contrast_pref_rows(prompts: Iterable[str], rng: random.Random, contrasts_per_prompt: int = 2) -> list[dict]:
    """``pref_rows`` plus, per prompt, ``contrasts_per_prompt`` pairs of the same form that differ only in
    the letter (asked vs another task letter); shuffled. Without them a reward model mostly learns the
    form, and a policy that writes one letter to every prompt pleases it."""
    prompts = list(prompts)
    rows = pref_rows(prompts, rng)
    for p in prompts:
        c = parse_target_letter(p)
        for _ in range(contrasts_per_prompt):
            n, spaced = _requested_count(p, rng), rng.random() < 0.5
            rows.append({"prompt": p, "chosen": _render([c] * n, spaced),
                         "rejected": _render([_other_task_letter(c, rng)] * n, spaced)})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    path = Path(path)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSONL file (blank lines skipped)."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_datasets(data_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write every dataset file into ``data_dir``; returns file name -> path.

    Deterministic for a seed: the same seed gives byte-identical files.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    train, eval_ = split_prompts(seed)
    out = {
        "task_train.jsonl": write_jsonl(data_dir / "task_train.jsonl", task_rows(train)),
        "task_eval.jsonl": write_jsonl(data_dir / "task_eval.jsonl", task_rows(eval_)),
        "sft_train.jsonl": write_jsonl(data_dir / "sft_train.jsonl", sft_rows(train, random.Random(f"sft-train-{seed}"))),
        "sft_eval.jsonl": write_jsonl(data_dir / "sft_eval.jsonl", sft_rows(eval_, random.Random(f"sft-eval-{seed}"))),
        "prefs_train.jsonl": write_jsonl(
            data_dir / "prefs_train.jsonl", pref_rows(train, random.Random(f"prefs-train-{seed}"))),
        "prefs_eval.jsonl": write_jsonl(
            data_dir / "prefs_eval.jsonl", pref_rows(eval_, random.Random(f"prefs-eval-{seed}"))),
        "sft_imperfect_train.jsonl": write_jsonl(
            data_dir / "sft_imperfect_train.jsonl", imperfect_sft_rows(train, random.Random(f"sft-imperfect-{seed}"))),
        "prefs_contrast_train.jsonl": write_jsonl(
            data_dir / "prefs_contrast_train.jsonl", contrast_pref_rows(train, random.Random(f"prefs-contrast-{seed}"))),
    }
    general = data_dir / "general_eval.txt"
    general.write_text("\n".join(GENERAL_EVAL_LINES) + "\n", encoding="utf-8")
    out["general_eval.txt"] = general
    from rlhf.assets.pretrain import general_prompt_rows
    from rlhf.assets.tokenizer import read_corpus

    out["general_prompts.jsonl"] = write_jsonl(data_dir / "general_prompts.jsonl", general_prompt_rows(read_corpus()))
    corpus = data_dir / "pretrain_corpus.txt"
    corpus.write_text("\n".join(read_corpus()) + "\n", encoding="utf-8")
    out["pretrain_corpus.txt"] = corpus
    from rlhf.assets.agent_task import write_agent_datasets

    out.update(write_agent_datasets(data_dir, seed, write_jsonl))
    return out
