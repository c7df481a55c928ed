"""Evaluation rows that are training rows are found by normalized-text hash and named."""
from __future__ import annotations

import json
import re

import pytest

from rlhf.config import load
from rlhf.data.reader import DataError
from rlhf.evaluation.leakage import check_eval_data, normalize_text, row_prompt, row_texts, shared_rows, text_hash


def test_normalization_ignores_case_spacing_and_unicode_forms():
    assert normalize_text("  Write\tthe  letter B.\n") == "write the letter b."
    assert text_hash("ﬁne day") == text_hash("fine DAY")  # NFKC folds the ligature
    assert text_hash("letter b") != text_hash("letter d")


def test_row_prompt_and_texts():
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    assert row_prompt({"prompt": "P", "response": "R"}, "prompt", "messages") == "P"
    assert row_prompt(chat, "prompt", "messages") == "Hi\nHello"
    assert row_texts({"prompt": "P", "chosen": "C", "rejected": "X", "n": 3}) == ["P", "C", "X"]
    assert row_texts(chat) == ["Hi", "Hello"]


def test_shared_rows_pairs_held_out_rows_with_their_first_training_row():
    train = [(1, "alpha"), (2, "Beta"), (3, "beta")]
    assert shared_rows(train, [(1, "gamma"), (2, " BETA "), (3, "alpha")]) == [(2, 2), (3, 1)]
    assert shared_rows(train, [(1, "delta")]) == []


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_check_names_both_files_and_rows(tmp_path):
    train = _write(tmp_path / "train.jsonl", [{"prompt": f"question {i}", "response": "a"} for i in range(6)])
    held_out = _write(tmp_path / "eval.jsonl", [{"prompt": "new one", "response": "a"},
                                                {"prompt": "Question  4", "response": "b"}])
    cfg = load(None, ["algorithm.name=sft", "model.path=/m", f"data.train_path={train}", f"data.eval_path={held_out}"])
    with pytest.raises(DataError, match=r"share 1 rows .*held-out split.*eval.jsonl:2 = .*train.jsonl:5"):
        check_eval_data(cfg)

    general = tmp_path / "general.txt"
    general.write_text("A fresh line.\nquestion 2\n")
    cfg = load(None, ["algorithm.name=sft", "model.path=/m", f"data.train_path={train}",
                      f"eval.general_text_path={general}"])
    with pytest.raises(DataError, match=r"general text.*general.txt:2 = .*train.jsonl:3"):
        check_eval_data(cfg)
    general.write_text("A fresh line.\n")
    check_eval_data(cfg)  # disjoint: no error


def test_eval_fraction_split_with_a_duplicate_on_both_sides_is_named(tmp_path):
    from rlhf.data.examples import train_and_eval

    rows = [{"prompt": f"question {i}", "response": "a"} for i in range(10)] + [{"prompt": "Question 3", "response": "b"}]
    train = _write(tmp_path / "train.jsonl", rows)
    cfg = load(None, ["algorithm.name=sft", "model.path=/m", f"data.train_path={train}", "data.eval_fraction=0.5"])

    class Row:  # what the loaders return: objects carrying their 1-based source row
        def __init__(self, row):
            self.row = row

    def load_rows(path):
        return [Row(i) for i in range(1, 12)], {"rows": 11}

    # Rows 4 and 11 hold the same prompt: every seed that puts them on different sides fails, naming
    # both rows; a seed that keeps them together passes.
    failed = 0
    for seed in range(20):
        try:
            train_part, held_out, _ = train_and_eval(load_rows, cfg.data, seed)
        except DataError as err:
            assert re.search(r"train.jsonl \(held-out rows\):(4|11) = .*train.jsonl:(4|11)", str(err)), str(err)
            failed += 1
            continue
        assert (4 in {r.row for r in train_part}) == (11 in {r.row for r in train_part}), seed
    assert 0 < failed < 20


def test_rlhf_eval_refuses_adapter_and_missing_folders_before_starting_anything(tmp_path):
    from rlhf.evaluation.report import run_eval

    adapter = tmp_path / "final"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    train = _write(tmp_path / "train.jsonl", [{"prompt": "p", "response": "r"}])
    sft = load(None, ["algorithm.name=sft", "model.path=/m", f"data.train_path={train}"])
    with pytest.raises(ValueError, match=r"PEFT adapter folder; .*model.lora.save_merged=true .*final/merged"):
        run_eval(sft, str(adapter))
    # PPO configs are evaluated too; a missing model folder is named by its flag, not sent to `rlhf assets`.
    ppo = load(None, ["model.path=/m", f"data.train_path={train}"])
    with pytest.raises(FileNotFoundError, match=r"--model: '.*/missing' is not a Hugging Face model folder"):
        run_eval(ppo, str(tmp_path / "missing"))
