"""ToolEnv: the policy calls tools with tags; their outputs come back as observations.

Tag format (one action per turn; the first tag in the turn counts):
    <tool name="calc">17*3</tool>          run a tool; its output is the next observation
    <answer>51</answer>                    the final answer; ends the episode
A turn with neither ends the episode with no reward (the policy gave up or rambled).
The episode's reward is paid at the answer: 1.0 when it equals the row's `answer` field
(numbers compared as numbers, text after trimming), else 0.0. Tool errors (bad input, a
timeout, a crash) are observations that start with "error:", never exceptions.

Shipped tools: `calc` (arithmetic, rlhf.envs.calc) and `python` (code run in the sandbox of
rlhf.envs.sandbox with a wall-clock timeout and memory/CPU/file/process limits).
"""
from __future__ import annotations

import re
from typing import Callable, Optional

from rlhf.envs.base import StepResult
from rlhf.envs.calc import CalcError, calculate
from rlhf.envs.sandbox import SandboxLimits, run_python

TOOL_TAG = re.compile(r'<tool\s+name\s*=\s*"([\w.-]+)"\s*>(.*?)</tool>', re.DOTALL)
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def run_calc(expression: str) -> tuple[bool, str]:
    try:
        return True, calculate(expression)
    except CalcError as err:
        return False, f"error: {err}"


def same_answer(given: str, expected) -> bool:
    """Numbers compare as numbers ("51.0" == 51), anything else as trimmed text."""
    given, expected = given.strip(), str(expected).strip()
    try:
        return float(given) == float(expected)
    except ValueError:
        return given == expected


class ToolEnv:
    """`rollout.env: rlhf.envs.tools:ToolEnv`; `rollout.env_kwargs` may set `tools` (names to enable)
    and the python sandbox's `timeout_s`, `memory_mb`, `output_bytes`."""

    def __init__(self, tools: tuple[str, ...] = ("calc", "python"), timeout_s: float = 5.0,
                 memory_mb: int = 512, output_bytes: int = 16_384, answer_key: str = "answer") -> None:
        limits = SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb, output_bytes=output_bytes)
        known: dict[str, Callable[[str], tuple[bool, str]]] = {
            "calc": run_calc,
            "python": lambda code: (lambda r: (r.ok, r.output))(run_python(code, limits)),
        }
        unknown = [t for t in tools if t not in known]
        if unknown:
            raise ValueError(f"rollout.env_kwargs.tools: unknown tools {unknown} (known: {', '.join(known)})")
        self.tools = {name: known[name] for name in tools}
        self.answer_key = answer_key
        self.expected = None

    def reset(self, row: dict) -> Optional[str]:
        self.expected = row.get(self.answer_key)
        return None

    def step(self, response: str) -> StepResult:
        tool, answer = TOOL_TAG.search(response), ANSWER_TAG.search(response)
        if answer is not None and (tool is None or answer.start() < tool.start()):
            correct = self.expected is not None and same_answer(answer.group(1), self.expected)
            return StepResult(None, 1.0 if correct else 0.0, True, {"answer": answer.group(1).strip()})
        if tool is None:
            return StepResult(None, 0.0, True, {"no_action": 1})
        name, argument = tool.group(1), tool.group(2)
        if name not in self.tools:
            ok, output = False, f"error: unknown tool {name!r} (tools: {', '.join(self.tools)})"
        else:
            ok, output = self.tools[name](argument)
        return StepResult(output, 0.0, False, {"tool_calls": 1, "tool_errors": 0 if ok else 1})
