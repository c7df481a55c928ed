"""The judge's scoring math, the rubric file rules, retry timing and the weighted sum, by hand."""
import math

import pytest
import torch

from rlhf.rewards.judge import expected_answer_value, left_pad, reply_text
from rlhf.rewards.remote import RetryPolicy
from rlhf.rewards.rubric import DEFAULT_RUBRIC, Rubric, load_rubric
from rlhf.rewards.weighted import WeightedReward


def test_expected_answer_value_renormalises_over_the_answers():
    # Vocab of 4; answers are tokens 1 and 3 worth 0 and 1. Row 0: logits 0 and ln 3 -> p = 1/4, 3/4
    # -> 0.75. Token 2's huge logit is ignored. Row 1: equal logits -> 0.5.
    logits = torch.tensor([[5.0, 0.0, 100.0, math.log(3.0)], [0.0, 2.0, 0.0, 2.0]])
    out = expected_answer_value(logits, torch.tensor([1, 3]), torch.tensor([0.0, 1.0]))
    assert torch.allclose(out, torch.tensor([0.75, 0.5]))


def test_left_pad_right_aligns_rows():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_rubric_render_and_parse():
    rubric = Rubric("Q: {prompt}\nA: {response}\n{not a slot}", {"0": 0.0, "1": 0.5, "10": 1.0})
    assert rubric.render("x {y}", "z") == "Q: x {y}\nA: z\n{not a slot}"
    assert rubric.parse_reply("Score: 1") == 0.5
    assert rubric.parse_reply("10/10, great") == 1.0  # the longer answer wins over its prefix "1"
    assert rubric.parse_reply("I'd say 0.") == 0.0
    for reply in ("seven", "7", "1.5", "score 101", ""):
        with pytest.raises(ValueError, match="holds none of the rubric's answers"):
            rubric.parse_reply(reply)


def test_default_rubric_and_bad_rubric_files(tmp_path):
    rubric = load_rubric()
    assert rubric.path == str(DEFAULT_RUBRIC) and list(rubric.answers) == [str(d) for d in range(10)]
    assert rubric.answers["0"] == 0.0 and rubric.answers["9"] == 1.0
    cases = {
        "template: 'no slots'\nanswers: {a: 1}\n": "has no {prompt} slot",
        "template: '{prompt} {response}'\n": "'answers' must map",
        "template: '{prompt} {response}'\nanswers: {a: high}\n": "must be a number",
        "template: '{prompt} {response}'\nanswers: {a: 1}\nextra: 1\n": "unknown keys ['extra']",
        "[1, 2]\n": "needs a 'template' string",
        "template: [\n": "not valid YAML",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"r{i}.yaml"
        path.write_text(text)
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
            load_rubric(str(path))
        assert str(err.value).startswith(f"rubric {path}")
    with pytest.raises(ValueError, match="cannot read"):
        load_rubric(str(tmp_path / "none.yaml"))


def test_reply_text_of_chat_completions():
    assert reply_text({"choices": [{"message": {"role": "assistant", "content": "7"}}]}) == "7"
    with pytest.raises(ValueError, match="not a chat-completions reply"):
        reply_text({"error": "quota"})


def test_retry_policy_delays_and_bound():
    policy = RetryPolicy(timeout_s=2.0, max_retries=3, backoff_s=0.5)
    assert policy.delays() == [0.5, 1.0, 2.0]
    assert policy.worst_case_s() == 4 * 2.0 + 3.5
    assert RetryPolicy(max_retries=0).delays() == []


def test_retry_window_keeps_retrying_until_it_has_passed():
    # 3 counted retries (0.5, 1, 2 s), then the 60 s window: waits 4, 8, then capped at 10, never past the window.
    policy = RetryPolicy(timeout_s=2.0, max_retries=3, backoff_s=0.5, window_s=60.0)
    assert [policy.retry_after(i, elapsed_s=0.0) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert policy.retry_after(3, elapsed_s=57.0) == 3.0  # only what is left of the window
    assert policy.retry_after(3, elapsed_s=60.0) is None
    assert policy.retry_after(1, elapsed_s=99.0) == 1.0  # the counted retries happen whatever the time
    assert RetryPolicy(max_retries=2).retry_after(2, elapsed_s=0.0) is None  # no window: count alone
    assert policy.worst_case_s() == 60.0 + 2.0 + 10.0


class _Const:
    def __init__(self, name, values):
        self.name, self.values = name, values

    def score(self, prompts, responses, sequences=None, attention_mask=None, columns=None):
        return torch.tensor(self.values)


def test_weighted_sum_and_nan_propagation():
    combined = WeightedReward({"function": _Const("f", [1.0, 0.0, 2.0]), "judge": _Const("j", [0.5, float("nan"), 0.0])},
                              {"function": 2.0, "judge": -1.0})
    out = combined.score(["p"] * 3, ["r"] * 3)
    # 2*1 - 0.5 = 1.5; 2*0 - nan = nan (the trainer drops it); 2*2 - 0 = 4
    assert out[0] == 1.5 and math.isnan(out[1]) and out[2] == 4.0
    assert combined.name == "weighted(2*f, -1*j)"
    with pytest.raises(ValueError, match="returned 2 scores for 3 responses"):
        WeightedReward({"function": _Const("f", [1.0, 2.0])}, {"function": 1.0}).score(["p"] * 3, ["r"] * 3)
