"""The calc tool, the python sandbox's limits, and ToolEnv's tag protocol (issue 17, part 2)."""
import os
import time

import pytest

from rlhf.envs.calc import CalcError, calculate
from rlhf.envs.sandbox import SandboxLimits, run_python
from rlhf.envs.tools import ToolEnv

LIMITS = SandboxLimits(timeout_s=2.0, memory_mb=256, output_bytes=2048)


@pytest.mark.parametrize("expression, value", [
    ("17*3", "51"), ("2 + 3 * 4", "14"), ("(2 + 3) * 4", "20"), ("7 / 2", "3.5"), ("8 / 2", "4"),
    ("7 // 2", "3"), ("-3 ** 2", "-9"), ("10 % 4", "2"), ("1 / 3", "0.3333333333"),
])
def test_calc_does_arithmetic(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize("expression", [
    "__import__('os').system('true')", "open('x')", "x + 1", "[1, 2]", "9 ** 9 ** 9", "1 / 0", "", "2 +",
    "'a' * 3", "10 ** 40",
])
def test_calc_refuses_anything_but_bounded_arithmetic(expression):
    with pytest.raises(CalcError):
        calculate(expression)


def test_python_runs_code_in_an_empty_folder():
    result = run_python("import os\nprint(sorted(os.listdir('.')), 6 * 7)\nopen('f.txt', 'w').write('ok')", LIMITS)
    assert result.ok and result.output.strip() == "['main.py'] 42"


def _bounded(code: str, expected: str, limit_s: float = LIMITS.timeout_s + 3.0):
    start = time.monotonic()
    result = run_python(code, LIMITS)
    assert time.monotonic() - start < limit_s
    assert not result.ok and result.output.startswith("error:") and expected in result.output, result.output
    return result


def test_python_hang_is_killed_at_the_timeout():
    _bounded("while True:\n    pass", "timed out after 2s")
    _bounded("import time\ntime.sleep(60)", "timed out after 2s")


def test_python_memory_limit():
    _bounded("x = bytearray(2 ** 31)", "memory limit of 256 MB")


def test_python_output_flood_is_cut_off():
    result = _bounded("while True:\n    print('x' * 1000)", "output over 2048 bytes")
    assert len(result.output) < 2 * LIMITS.output_bytes


def test_python_cannot_write_outside_its_folder(tmp_path):
    target = tmp_path / "escaped.txt"
    _bounded(f"open({str(target)!r}, 'w').write('x')", "outside the working folder")
    _bounded(f"import os\nos.mkdir({str(tmp_path / 'dir')!r})", "outside the working folder")
    _bounded("open('../escaped.txt', 'w').write('x')", "outside the working folder")
    assert not target.exists() and not (tmp_path / "dir").exists()


def test_python_fork_bomb_and_subprocess_are_refused():
    _bounded("import os\nwhile True:\n    os.fork()", "refused")
    _bounded("import subprocess\nsubprocess.run(['true'])", "refused")


def test_python_network_is_refused():
    _bounded("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)", "network access is refused")


def test_python_crash_is_an_error_observation():
    _bounded("raise ValueError('boom')", "ValueError: boom")


def test_tool_env_runs_tools_and_pays_the_right_answer():
    env = ToolEnv(tools=("calc",))
    assert env.reset({"prompt": "What is 17*3?", "answer": "51"}) is None
    step = env.step('I will compute. <tool name="calc">17*3</tool>')
    assert (step.observation, step.reward, step.done, step.info) == ("51", 0.0, False, {"tool_calls": 1, "tool_errors": 0})
    step = env.step('<tool name="calc">17*</tool>')
    assert step.observation.startswith("error:") and step.info["tool_errors"] == 1 and not step.done
    step = env.step('<tool name="python">print(1)</tool>')
    assert "unknown tool 'python'" in step.observation and step.info["tool_errors"] == 1
    step = env.step("<answer>51.0</answer>")
    assert (step.reward, step.done) == (1.0, True)
    env.reset({"answer": "52"})
    assert env.step("<answer>51</answer>").reward == 0.0
    assert env.step("no idea").done


def test_tool_env_python_tool_reaches_the_sandbox():
    env = ToolEnv(tools=("python",), timeout_s=2.0, memory_mb=256)
    env.reset({"answer": "3"})
    assert env.step('<tool name="python">print(1 + 2)</tool>').observation.strip() == "3"
    step = env.step('<tool name="python">while True: pass</tool>')
    assert step.observation.startswith("error: timed out") and step.info["tool_errors"] == 1
