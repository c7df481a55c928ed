"""Every promised input format loads, bad rows are named the same way in each, and the
oversize-prompt policy covers both the prompt limit and the model's context."""
import json

import pytest

from rlhf.config import DataConfig
from rlhf.data.prompts import ensure_chat_template, load_prompts, prompt_token_limit
from rlhf.data.reader import DataError, ReadReport, read_rows, require_text

ROWS = [{"prompt": "first"}, {"prompt": "second"}, {"prompt": 7}, {"other": "x"}, {"prompt": "fifth"}]
GOOD = [(1, "first"), (2, "second"), (5, "fifth")]


def _parse(row):
    return require_text(row, "prompt")


def _write(tmp_path, kind: str, rows: list[dict]) -> str:
    if kind == "jsonl":
        path = tmp_path / "d.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "json":
        path = tmp_path / "d.json"
        path.write_text(json.dumps(rows, indent=1))
    elif kind == "json_lines_in_json":
        path = tmp_path / "lines.json"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import datasets

        # Arrow needs one type per column: keep the wrong type as a string column elsewhere.
        table = {"prompt": [r.get("prompt") if isinstance(r.get("prompt"), str) else None for r in rows]}
        ds = datasets.Dataset.from_dict(table)
        if kind == "parquet":
            path = tmp_path / "d.parquet"
            ds.to_parquet(str(path))
        else:
            path = tmp_path / "saved"
            ds.save_to_disk(str(path))
    return str(path)


@pytest.mark.parametrize("kind", ["jsonl", "json", "json_lines_in_json", "parquet", "saved"])
def test_each_format_loads_names_bad_rows_and_skips_them(tmp_path, kind):
    path = _write(tmp_path, kind, ROWS)
    with pytest.raises(DataError) as err:
        read_rows(path, _parse)
    # Row 3 is a number in JSON, a null in the Arrow formats (which cannot mix types in a column).
    expected = "must be a string" if kind.startswith("json") else "missing field 'prompt'"
    assert str(err.value).startswith(f"{path}:3: ") and expected in str(err.value)
    report = ReadReport()
    assert read_rows(path, _parse, on_bad_row="skip", report=report) == GOOD
    assert report.skipped == 2 and report.rows_read == 3
    assert [p.split(": ")[0] for p in report.first_bad] == [f"{path}:3", f"{path}:4"]


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"[]", "empty (no rows)"),
    (b'[{"prompt": "a"},\n {"prompt": ]', ":2: broken JSON"),
    (b'{"prompt": "a"}', "top level must be a list"),
    (b'[{"prompt": "\xff"}]', "not valid UTF-8"),
])
def test_json_file_problems(tmp_path, content, message):
    path = tmp_path / "d.json"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_rows(str(path), _parse, on_bad_row="skip")  # a file that cannot be read is an error even when lenient
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_empty_parquet_and_unknown_type(tmp_path):
    import datasets

    path = tmp_path / "e.parquet"
    datasets.Dataset.from_dict({"prompt": []}).to_parquet(str(path))
    with pytest.raises(DataError, match="empty"):
        read_rows(str(path), _parse)
    other = tmp_path / "d.csv"
    other.write_text("prompt\na\n")
    with pytest.raises(DataError, match="unsupported file type"):
        read_rows(str(other), _parse)


# ---------------------------------------------------------------- prompt limits

def test_prompt_token_limit_takes_the_tighter_of_both():
    assert prompt_token_limit(64, None, 16)[0] == 64
    assert prompt_token_limit(64, 256, 16)[0] == 64  # 256 - 16 = 240 leaves the prompt limit binding
    limit, why = prompt_token_limit(64, 70, 16)  # 70 - 16 = 54 < 64
    assert limit == 54 and "max_position_embeddings=70" in why
    with pytest.raises(DataError, match="rollout.max_new_tokens=80 leaves no room"):
        prompt_token_limit(64, 80, 80)


@pytest.fixture(scope="module")
def tokenizer():
    from rlhf.assets.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "Write the letter b."}) + "\n"
                    + json.dumps({"prompt": "Write the letter b. " * 20}) + "\n")
    return str(path)


def _data(**keys) -> DataConfig:
    return DataConfig(**keys)


def _lengths(tokenizer, path):
    prompts, _ = load_prompts(path, tokenizer, _data(max_prompt_tokens=1000, on_oversize="error"))
    return [len(p.token_ids) for p in prompts]


@pytest.mark.parametrize("limit_by", ["prompt_limit", "context"])
def test_oversize_policy_error_drop_truncate(tokenizer, prompt_file, limit_by):
    short, long = _lengths(tokenizer, prompt_file)
    cap = short + 5
    assert long > cap
    keys, kwargs = (({"max_prompt_tokens": cap}, {}) if limit_by == "prompt_limit"
                    else ({"max_prompt_tokens": 1000}, {"context_limit": cap + 12, "max_new_tokens": 12}))
    with pytest.raises(DataError) as err:
        load_prompts(prompt_file, tokenizer, _data(on_oversize="error", **keys), **kwargs)
    assert str(err.value).startswith(f"{prompt_file}:2: prompt has {long} tokens, over ")
    assert ("max_position_embeddings" in str(err.value)) == (limit_by == "context")

    kept, counts = load_prompts(prompt_file, tokenizer, _data(on_oversize="drop", **keys), **kwargs)
    assert [p.row for p in kept] == [1] and counts["dropped_oversize"] == 1 and counts["prompt_limit"] == cap

    cut, counts = load_prompts(prompt_file, tokenizer, _data(on_oversize="truncate", **keys), **kwargs)
    assert [len(p.token_ids) for p in cut] == [short, cap] and counts["truncated"] == 1
    # The end survives (the generation prompt), and the text is what the ids say.
    assert cut[1].text.endswith("<|assistant|>\n")
    assert tokenizer(cut[1].text, add_special_tokens=False)["input_ids"] == cut[1].token_ids


def test_every_prompt_oversize_is_an_error(tokenizer, prompt_file):
    with pytest.raises(DataError, match="every prompt is over data.max_prompt_tokens=3"):
        load_prompts(prompt_file, tokenizer, _data(max_prompt_tokens=3, on_oversize="drop"))


def test_missing_chat_template_fix_it_message_or_template_file(tokenizer, tmp_path):
    import copy

    bare = copy.deepcopy(tokenizer)
    template = bare.chat_template
    bare.chat_template = None
    with pytest.raises(DataError, match="has no chat template: set data.chat_template_path"):
        ensure_chat_template(bare, None, "/models/bare")
    path = tmp_path / "t.jinja"
    path.write_text(template)
    ensure_chat_template(bare, str(path), "/models/bare")
    assert bare.chat_template == template
