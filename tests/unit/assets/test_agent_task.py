"""The agent task's data: every SFT transcript calls calc with the question's own expression, whose value
(the tool's answer, by the shipped tool) is the row's answer."""
from __future__ import annotations

import pytest

from rlhf.assets.agent_task import TEMPLATES, agent_rows, transcript
from rlhf.envs.calc import calculate


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("op, answer", [("+", "51"), ("*", "444")])
def test_transcript_calls_calc_with_the_whole_expression(template, op, answer):
    row = {"prompt": template.format(a=37, op=op, b=(14 if op == "+" else 12)), "answer": answer}
    user, call, tool, final = transcript(row)
    assert call == {"role": "assistant", "content": f'<tool name="calc">37{op}{14 if op == "+" else 12}</tool>'}
    assert (user["content"], tool, final["content"]) == (row["prompt"], {"role": "tool", "content": answer},
                                                         f"<answer>{answer}</answer>")


def test_every_shipped_transcript_computes_its_rows_answer():
    rows = agent_rows(seed=0)
    train = {r["prompt"]: r["answer"] for r in rows["agent_train.jsonl"]}
    sft = rows["agent_sft_train.jsonl"]
    assert len(sft) == len(train)
    for example in sft:
        user, call, tool, final = example["messages"]
        expression = call["content"].removeprefix('<tool name="calc">').removesuffix("</tool>")
        assert str(calculate(expression)) == tool["content"] == train[user["content"]], example
