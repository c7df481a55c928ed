"""JSONL data for the "calc" agent task: arithmetic the tiny policy cannot do in its head but can
look up with the `calc` tool of rlhf.envs.tools:ToolEnv (configs/agent_tiny.yaml).

Files written under ``OUT/data/``:

- ``agent_{train,eval}.jsonl``: ``{"prompt", "answer"}``, e.g. "What is 37 * 12?" / "444";
  the eval questions' operand pairs never occur in train, so held-out accuracy needs the tool;
- ``agent_sft_train.jsonl``: ``{"messages"}`` tool-use transcripts for the SFT warm start:
  user question, assistant ``<tool name="calc">37*12</tool>``, tool ``444``, assistant
  ``<answer>444</answer>`` (the seeds' pipeline: SFT first, then RL).
"""
from __future__ import annotations

import random
import re
from pathlib import Path

AGENT_FILES = ("agent_train.jsonl", "agent_eval.jsonl", "agent_sft_train.jsonl")
OPERATORS = ("+", "*")
TEMPLATES = ("What is {a} {op} {b}?", "Compute {a} {op} {b}.", "Calculate {a} {op} {b}.")
EVAL_QUESTIONS = 48
SFT_SHARE = 1.0
"""Share of the training questions that also get an SFT transcript (the rest are RL-only)."""


def _questions(seed: int) -> tuple[list[tuple[int, str, int]], list[tuple[int, str, int]]]:
    """(a, op, b) triples: the train and the held-out split, disjoint, in a seeded order."""
    pairs = [(a, op, b) for a in range(11, 60) for b in range(11, 60) for op in OPERATORS]
    rng = random.Random(f"agent-{seed}")
    rng.shuffle(pairs)
    return pairs[EVAL_QUESTIONS:EVAL_QUESTIONS + 600], pairs[:EVAL_QUESTIONS]


def _row(triple, rng: random.Random) -> dict:
    a, op, b = triple
    answer = a + b if op == "+" else a * b
    return {"prompt": rng.choice(TEMPLATES).format(a=a, op=op, b=b), "answer": str(answer)}


def transcript(row: dict) -> list[dict]:
    """The demonstration of one question: call calc with the expression, then answer with its output."""
    a, op, b = re.search(r"(\d+) ([+*]) (\d+)", row["prompt"]).groups()
    expression = f"{a}{op}{b}"
    return [{"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": f'<tool name="calc">{expression}</tool>'},
            {"role": "tool", "content": row["answer"]},
            {"role": "assistant", "content": f"<answer>{row['answer']}</answer>"}]


def agent_rows(seed: int = 0) -> dict[str, list[dict]]:
    train, eval_ = _questions(seed)
    rng = random.Random(f"agent-rows-{seed}")
    train_rows = [_row(t, rng) for t in train]
    eval_rows = [_row(t, rng) for t in eval_]
    sft = [{"messages": transcript(r)} for r in train_rows[: int(len(train_rows) * SFT_SHARE)]]
    return {"agent_train.jsonl": train_rows, "agent_eval.jsonl": eval_rows, "agent_sft_train.jsonl": sft}


def write_agent_datasets(data_dir: str | Path, seed: int, write_jsonl) -> dict[str, Path]:
    return {name: write_jsonl(Path(data_dir) / name, rows) for name, rows in agent_rows(seed).items()}
