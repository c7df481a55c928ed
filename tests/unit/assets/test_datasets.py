"""The pipeline demo's data: imperfect demonstrations and letter-contrast preferences."""
import random

from rlhf.assets.datasets import contrast_pref_rows, imperfect_sft_rows, split_prompts
from rlhf.tasks import LETTERS, letter_score, parse_target_letter


def test_imperfect_demonstrations_have_the_right_form_and_the_asked_letter_about_half_the_time():
    train, _ = split_prompts(0)
    rows = imperfect_sft_rows(train, random.Random(0))
    assert [r["prompt"] for r in rows] == train
    right = 0
    for row in rows:
        letters = row["response"].replace(" ", "")
        assert len(set(letters)) == 1 and letters[0] in LETTERS  # one task letter, repeated
        if " " in row["response"]:
            assert row["response"] == " ".join(letters)
        right += letters[0] == parse_target_letter(row["prompt"])
    assert 0.4 < right / len(rows) < 0.6
    assert imperfect_sft_rows(train, random.Random(0)) == rows  # deterministic for a seed


def test_contrast_preferences_add_pairs_that_differ_only_in_the_letter():
    train, _ = split_prompts(0)
    rows = contrast_pref_rows(train, random.Random(0), contrasts_per_prompt=2)
    assert len(rows) == 3 * len(train)
    contrasts = 0
    for row in rows:
        target = parse_target_letter(row["prompt"])
        assert letter_score(target, row["chosen"]) > letter_score(target, row["rejected"])
        chosen, rejected = row["chosen"], row["rejected"]
        if len(chosen) == len(rejected) and {c for c in rejected if c != " "} <= set(LETTERS) - {target} \
                and len(set(rejected.replace(" ", ""))) == 1 and chosen.replace(target, "x") == rejected.replace(rejected[0], "x"):
            contrasts += 1
    # The base pairs can contain a same-form wrong task letter too; the contrasts are at least 2 per prompt.
    assert contrasts >= 2 * len(train)
    assert [r["prompt"] for r in rows] != sorted(r["prompt"] for r in rows)  # shuffled, not grouped by prompt
