"""Reward sources see the data rows' other fields (issue 17, part 1)."""
import sys
import types

import torch

from rlhf.config.schema import DataConfig
from rlhf.data.prompts import load_prompts
from rlhf.rewards.columns import call_with_accepted, columns_as_lists, score_args
from rlhf.rewards.function import FunctionReward
from rlhf.rewards.rubric import Rubric
from rlhf.records import RolloutBatch


def _module(name: str, **functions) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(functions)
    sys.modules[name] = module


def test_columns_as_lists_fills_missing_fields_with_none():
    assert columns_as_lists([{"answer": "4", "id": 1}, {"answer": "9"}]) == {"answer": ["4", "9"], "id": [1, None]}
    assert columns_as_lists([]) == {}


def test_call_with_accepted_passes_only_what_the_signature_takes():
    def narrow(prompts, responses):
        return ("narrow", prompts, responses)

    def wide(prompts, responses, **kwargs):
        return ("wide", sorted(kwargs))

    args = {"prompts": ["p"], "responses": ["r"], "answer": ["a"], "tests": ["t"]}
    assert call_with_accepted(narrow, **args) == ("narrow", ["p"], ["r"])
    assert call_with_accepted(wide, **args) == ("wide", ["answer", "tests"])


def test_function_reward_receives_the_row_columns():
    seen = {}

    def exact(prompts, responses, answer):
        seen["answer"] = answer
        return [float(r.strip() == a) for r, a in zip(responses, answer)]

    _module("_cols_reward", exact=exact, legacy=lambda prompts, responses: [len(r) for r in responses])
    columns = {"answer": ["4", "9"], "source": ["x", "y"]}
    scores = FunctionReward("_cols_reward:exact").score(["2+2?", "3*3?"], ["4", "8"], columns=columns)
    assert scores.tolist() == [1.0, 0.0]
    assert seen["answer"] == ["4", "9"]
    # A function written before columns existed still works (and gets none of them).
    assert FunctionReward("_cols_reward:legacy").score(["a", "b"], ["xy", "z"], columns=columns).tolist() == [2.0, 1.0]


def test_rows_reach_the_reward_through_prompts_and_the_rollout(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "2+2?", "answer": "4"}\n{"prompt": "3*3?", "answer": "9", "level": 2}\n')

    class Chars:  # a stand-in tokenizer: one id per character (enough for prompt loading)
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

    prompts, _ = load_prompts(str(data), Chars(), DataConfig(train_path=str(data), apply_chat_template=False))
    assert [p.columns for p in prompts] == [{"answer": "4"}, {"answer": "9", "level": 2}]
    rollout = RolloutBatch(
        sequences=torch.zeros(4, 3, dtype=torch.long), attention_mask=torch.ones(4, 3, dtype=torch.long),
        response_mask=torch.ones(4, 1), rollout_logprobs=torch.zeros(4, 1), prompt_len=2,
        prompts=["a", "a", "b", "b"], responses=["4", "5", "9", "9"], prompt_index=[1, 1, 2, 2],
        policy_version=0, columns=[prompts[0].columns] * 2 + [prompts[1].columns] * 2)
    args = score_args(rollout, torch.tensor([1, 2]))
    assert args[0] == ["a", "b"] and args[1] == ["5", "9"]
    assert args[4] == {"answer": ["4", "9"], "level": [None, 2]}


def test_rubric_template_fills_row_fields():
    rubric = Rubric(template="Q: {prompt}\nA: {response}\nReference: {answer}", answers={"0": 0.0, "1": 1.0})
    assert rubric.render("2+2?", "{answer}", {"answer": "4"}) == "Q: 2+2?\nA: {answer}\nReference: 4"
