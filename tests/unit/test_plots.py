"""`rlhf plot`: reading metrics.jsonl strictly (but tolerating a killed run's last line) and grouping keys."""
from __future__ import annotations

import json
import logging

import pytest

from rlhf.cli import main
from rlhf.plots import PlotError, group_series, read_records

PPO_ROW = {"reward/mean": 0.1, "reward/std": 0.2, "reward/invalid": 0, "kl/mean": 1.5, "kl/coef": 0.002,
           "policy/loss": -0.3, "critic/loss": 0.4, "response_length/mean": 11.0, "timing/step_s": 1.2,
           "train/skipped_update": 0}


def _write(tmp_path, lines: list[str]) -> str:
    (tmp_path / "metrics.jsonl").write_text("".join(lines), encoding="utf-8")
    return str(tmp_path)


def test_keys_are_grouped_by_what_they_measure():
    records = [{"step": 1, **PPO_ROW}, {"step": 2, **PPO_ROW, "reward/mean": 0.3, "kl/mean": None}]
    grouped = group_series(records)
    assert list(grouped) == ["reward", "kl", "losses", "response_length"]  # no eval keys: no eval group
    assert set(grouped["reward"]) == {"reward/mean", "reward/std"}  # the invalid-sample count is not a reward
    assert grouped["reward"]["reward/mean"].steps == [1, 2] and grouped["reward"]["reward/mean"].values == [0.1, 0.3]
    assert grouped["kl"]["kl/mean"].steps == [1]  # null (a NaN when logged) is left out
    assert set(grouped["kl"]) == {"kl/mean", "kl/coef"}
    assert set(grouped["losses"]) == {"policy/loss", "critic/loss"}


def test_mode_and_eval_keys_and_a_rewritten_step():
    records = [{"step": 0, "eval/sft/loss": 6.0, "eval/rewards/accuracy": 0.0, "eval/samples": 48},  # a count: no panel
               {"step": 1, "sft/loss": 5.0, "rewards/margin": 0.1, "dpo/loss": 0.69},
               {"step": 1, "sft/loss": 4.0},  # a resumed run logged step 1 again: the last value counts
               {"step": 2, "sft/loss": 3.0, "eval/sft/loss": 2.5}]
    grouped = group_series(records)
    assert list(grouped) == ["reward", "losses", "eval"]
    assert grouped["losses"]["sft/loss"].values == [4.0, 3.0]
    assert set(grouped["losses"]) == {"sft/loss", "dpo/loss"}
    assert grouped["eval"]["eval/sft/loss"].steps == [0, 2] and set(grouped["eval"]) == {
        "eval/sft/loss", "eval/rewards/accuracy"}
    assert set(grouped["reward"]) == {"rewards/margin"}


def test_truncated_last_line_is_skipped_with_a_warning(tmp_path, caplog):
    folder = _write(tmp_path, [json.dumps({"step": 1, "sft/loss": 2.0}) + "\n", '{"step": 2, "sft/lo'])
    with caplog.at_level(logging.WARNING):
        records = read_records(folder)
    assert [r["step"] for r in records] == [1]
    assert "metrics.jsonl:2: skipped a truncated last line" in caplog.text


def test_corrupt_line_in_the_middle_names_file_and_line(tmp_path):
    folder = _write(tmp_path, ['{"step": 1}\n', "\n", "{oops\n", '{"step": 3}\n'])
    with pytest.raises(PlotError, match=r"metrics.jsonl:3: not valid JSON"):
        read_records(folder)
    folder = _write(tmp_path, ['{"step": 1}\n', '[1, 2]\n', '{"step": 3}\n'])
    with pytest.raises(PlotError, match=r"metrics.jsonl:2: expected an object with an integer 'step'"):
        read_records(folder)


def test_missing_folder_file_or_data_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(PlotError, match="no such run folder"):
        read_records(str(tmp_path / "nope"))
    with pytest.raises(PlotError, match=r"metrics.jsonl: no metrics file"):
        read_records(str(tmp_path))
    _write(tmp_path, ['{"step": 1, "timing/step_s": 1.0}\n'])
    assert main(["plot", str(tmp_path)]) == 2
    assert "none of the plotted metric groups" in capsys.readouterr().err
