"""The "letters" task: prompt parsing and hand-computed rewards."""

from __future__ import annotations

import pytest

from rlhf.tasks import (
    COUNTED_TEMPLATES,
    LETTERS,
    TASKS,
    UNCOUNTED_TEMPLATES,
    letter_reward,
    letter_score,
    parse_target_letter,
)


@pytest.mark.parametrize(
    ("prompt", "letter"),
    [
        ("Write the letter b five times.", "b"),
        ("Repeat the letter k.", "k"),
        ("Write the letter 'e' three times.", "e"),
        ("Give me the letter s, two times.", "s"),
        ("Write four copies of the letter t.", "t"),
        ("write the LETTER a twice", "a"),
        ("Type the letter \u201ck\u201d.", "k"),
        ("Write the letter B.", "B"),  # taken as written: the reward compares exactly
        # A chat-rendered prompt: the last request wins over the system text.
        ("<s><|system|>\nAny letter is fine.<|end|>\n<|user|>\nRepeat the letter t.<|end|>\n<|assistant|>\n", "t"),
        ("Write the letter a. No, write the letter s.", "s"),
    ],
)
def test_parse_target_letter(prompt: str, letter: str) -> None:
    assert parse_target_letter(prompt) == letter


@pytest.mark.parametrize(
    "prompt",
    [
        "",
        "Write b five times.",
        "Write the letters abc.",
        "Write the letter bee.",  # a word, not a letter
        "Write the letter 5 times.",
        "Tell me a story.",
    ],
)
def test_parse_target_letter_errors_name_the_prompt(prompt: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_target_letter(prompt)
    assert repr(prompt) in str(err.value)


def test_every_template_parses_for_every_letter() -> None:
    for c in LETTERS:
        for t in COUNTED_TEMPLATES:
            assert parse_target_letter(t.format(c=c, n="three")) == c
        for t in UNCOUNTED_TEMPLATES:
            assert parse_target_letter(t.format(c=c)) == c


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("b b b b b", 1.0),
        ("bbbbb", 1.0),
        ("b", 1.0),
        ("  b\n\tb  ", 1.0),
        ("b b x b", 0.75),  # 3 of 4 non-space characters
        ("bxbx", 0.5),
        ("abc", 1 / 3),
        ("xyz", 0.0),
        ("B B", 0.0),  # case-sensitive
        ("", 0.0),
        ("   \n ", 0.0),
        ("b.", 0.5),  # punctuation counts against
    ],
)
def test_letter_score(response: str, expected: float) -> None:
    assert letter_score("b", response) == pytest.approx(expected)


def test_letter_reward_batch() -> None:
    prompts = ["Write the letter b five times.", "Repeat the letter k.", "Say the letter e again and again.", "Repeat the letter a."]
    responses = ["b b b b b", "k a k a", "", "hello"]
    assert letter_reward(prompts, responses) == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert all(0.0 <= r <= 1.0 for r in letter_reward(prompts, responses))


def test_letter_reward_errors() -> None:
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        letter_reward(["Repeat the letter a.", "Repeat the letter b."], ["a"])
    with pytest.raises(ValueError, match="Tell me a joke"):
        letter_reward(["Repeat the letter a.", "Tell me a joke."], ["a", "b"])


def test_tasks_registry() -> None:
    assert TASKS["letters"] is letter_reward
    assert letter_reward([], []) == []
