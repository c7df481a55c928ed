import pytest

from rlhf.data.prompts import PromptSampler, Prompt
from rlhf.data.reader import DataError, ReadReport, read_rows, require_text


def _parse(row):
    return require_text(row, "prompt")


def _file(tmp_path, content: bytes, name="d.jsonl"):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"prompt": "a"}\n{"prompt": \n', ":2: broken JSON"),
        (b'{"prompt": "a"}\n{"other": "b"}\n', ":2: missing field 'prompt'"),
        (b'{"prompt": "a"}\n{"prompt": null}\n', ":2: missing field 'prompt'"),
        (b'{"prompt": 3}\n', ":1: field 'prompt' must be a string"),
        (b'{"prompt": "  "}\n', ":1: field 'prompt' is empty"),
        (b'{"prompt": "\xff"}\n', ":1: not valid UTF-8"),
        (b'[1, 2]\n', ":1: expected a JSON object"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, content, message):
    path = _file(tmp_path, content)
    with pytest.raises(DataError) as err:
        read_rows(path, _parse)
    assert f"{path}{message}" in str(err.value)


def test_skip_mode_counts_and_keeps_good_rows(tmp_path):
    path = _file(tmp_path, b'{"prompt": "a"}\nnot json\n{"prompt": 1}\n{"prompt": "b"}\n')
    report = ReadReport()
    rows = read_rows(path, _parse, on_bad_row="skip", report=report)
    assert rows == [(1, "a"), (4, "b")]
    assert report.skipped == 2 and report.first_bad[0].startswith(f"{path}:2:")


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="empty"):
        read_rows(_file(tmp_path, b""), _parse)
    with pytest.raises(DataError, match="no usable rows \\(2 bad rows skipped\\)"):
        read_rows(_file(tmp_path, b'{"x": 1}\n{"prompt": ""}\n'), _parse, on_bad_row="skip")


def test_sampler_epochs_and_resume():
    prompts = [Prompt(row=i, text=str(i), token_ids=[i]) for i in range(5)]
    straight = PromptSampler(prompts, seed=3)
    first = [p.row for p in straight.next_batch(4)]
    rest = [p.row for p in straight.next_batch(7)]
    assert sorted(first + rest[:1]) == list(range(5))  # one full epoch before any repeat
    resumed = PromptSampler(prompts, seed=3)
    resumed.next_batch(4)
    state = resumed.state_dict()
    again = PromptSampler(prompts, seed=3)
    again.load_state_dict(state)
    assert [p.row for p in again.next_batch(7)] == rest
