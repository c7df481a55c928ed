"""Verifiable tasks and their reward functions.

Task "letters": the prompt asks for one letter repeated ("Write the letter b five
times.", "Repeat the letter k."); the reward is the fraction of the response's
non-whitespace characters that are that letter. It needs no learned judge, gives
partial credit (so a random-init policy gets a gradient signal from the start),
and with only a handful of target letters a tiny model learns it in a few dozen
policy-gradient steps. The requested count is flavour only: it is not scored.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Few, visually distinct letters: each gets many training prompts, so the policy
# can learn the prompt-to-letter mapping quickly.
LETTERS: tuple[str, ...] = ("a", "b", "e", "k", "s", "t")

COUNT_WORDS: dict[int, str] = {
    2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine",
}

# "{c}" is the letter, "{n}" the count as a word. The first group asks for a count.
COUNTED_TEMPLATES: tuple[str, ...] = (
    "Write the letter {c} {n} times.",
    "Type the letter {c} {n} times.",
    "Please write the letter {c} {n} times.",
    "Write the letter '{c}' {n} times.",
    "Give me the letter {c}, {n} times.",
    "Repeat the letter {c} {n} times.",
    "Can you write the letter {c} {n} times?",
    "Say the letter {c} {n} times.",
    "Print the letter {c} {n} times.",
    "Write {n} copies of the letter {c}.",
)
UNCOUNTED_TEMPLATES: tuple[str, ...] = (
    "Repeat the letter {c}.",
    "Write the letter {c} over and over.",
    "Say the letter {c} again and again.",
    "Please repeat the letter {c}.",
    "Fill the line with the letter {c}.",
)

# "letter" then an optional quote, then one ASCII letter that is not the start of
# a longer word ("the letter b" but not "the letters bcd" or "the letter bee").
_LETTER_RE = re.compile(r"\bletter\s+[\"'\u2018\u2019\u201c\u201d`]?([A-Za-z])(?![A-Za-z])", re.IGNORECASE)


def parse_target_letter(prompt: str) -> str:
    """The letter a "letters" prompt asks for, exactly as written in it.

    The last "letter X" in the text wins, so a prompt already rendered through a
    chat template (system text first, the user's request last) parses too.
    Raises ``ValueError`` naming the prompt when it asks for no letter.
    """
    matches = _LETTER_RE.findall(prompt)
    if not matches:
        raise ValueError(f"no target letter found in prompt {prompt!r}")
    return matches[-1]


def letter_score(target: str, response: str) -> float:
    """Fraction of ``response``'s non-whitespace characters equal to ``target`` (0.0 if none)."""
    chars = [ch for ch in response if not ch.isspace()]
    if not chars:
        return 0.0
    return sum(ch == target for ch in chars) / len(chars)


def letter_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Rewards in [0, 1] for the "letters" task, one per (prompt, response) pair."""
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    return [letter_score(parse_target_letter(p), r) for p, r in zip(prompts, responses)]


def answer_char_reward(responses: list[str], answer: list[str]) -> list[float]:
    """A verifiable reward that reads each row's reference `answer` (a data column, see
    rlhf.rewards.columns): the fraction of the response's non-whitespace characters that are
    characters of the answer (1.0 for a response of only the answer's characters). Partial
    credit, like `letter_score`, so a random-init policy gets a signal from the start."""
    if len(responses) != len(answer):
        raise ValueError(f"got {len(responses)} responses but {len(answer)} answers")
    scores = []
    for response, reference in zip(responses, answer):
        chars = [ch for ch in response if not ch.isspace()]
        scores.append(sum(ch in str(reference) for ch in chars) / len(chars) if chars else 0.0)
    return scores


RewardFn = Callable[[list[str], list[str]], list[float]]

TASKS: dict[str, RewardFn] = {"letters": letter_reward}
