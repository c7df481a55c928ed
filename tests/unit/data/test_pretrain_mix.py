"""Which pre-training rows a micro-batch gets, and how a line becomes a row (rlhf/data/pretrain_mix.py)."""
from collections import Counter

import pytest

from rlhf.data.pretrain_mix import ptx_examples, ptx_indices, read_ptx_lines
from rlhf.data.reader import DataError
from rlhf.losses.sft import IGNORE_INDEX


def _step_rows(size, step, replicas, micros_per_replica, rows_per_micro, seed=0):
    """What each replica draws in one optimizer step, in the order TrainingActor draws it."""
    total = replicas * micros_per_replica
    return [[ptx_indices(size, seed, step, rank * micros_per_replica + j, total, rows_per_micro)
             for j in range(micros_per_replica)] for rank in range(replicas)]


def test_one_replica_draws_what_two_draw_together():
    # Global mini-batch of 4 micro-batches: one replica runs all four, two run two each.
    for step in range(3):
        one = [m for rank in _step_rows(10, step, 1, 4, 3) for m in rank]
        two = [m for rank in _step_rows(10, step, 2, 2, 3) for m in rank]
        assert one == two


def test_each_epoch_of_the_file_visits_every_row_once_in_a_new_order():
    size = 7  # steps of 2 micro-batches of 2 rows
    drawn = [i for step in range(7) for m in _step_rows(size, step, 1, 2, 2)[0] for i in m]  # 28 = 4 epochs
    epochs = [drawn[e * size:(e + 1) * size] for e in range(len(drawn) // size)]
    assert all(Counter(e) == Counter(range(size)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled per epoch
    # A pure function of (seed, step, place): the same call gives the same rows; another seed others.
    assert ptx_indices(size, 0, 5, 1, 2, 2) == ptx_indices(size, 0, 5, 1, 2, 2)
    assert ptx_indices(size, 0, 0, 0, 1, size) != ptx_indices(size, 1, 0, 0, 1, size)


class _Tokenizer:
    bos_token_id, eos_token_id = 1, 2

    def __call__(self, text, add_special_tokens):
        assert add_special_tokens is False
        return {"input_ids": [10 + len(w) for w in text.split()]}


def test_rows_are_begin_text_end_cut_to_the_limit_and_trained_after_the_first_token():
    rows = ptx_examples(_Tokenizer(), [(1, "a bb ccc"), (3, "dddd")], max_tokens=4)
    assert [r.input_ids for r in rows] == [[1, 11, 12, 13], [1, 14, 2]]
    assert [r.labels for r in rows] == [[IGNORE_INDEX, 11, 12, 13], [IGNORE_INDEX, 14, 2]]
    assert [r.row for r in rows] == [1, 3]  # the file's line numbers


def test_reading_keeps_text_lines_and_names_the_key_when_there_are_none(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("  first line \n\nsecond\n")
    assert read_ptx_lines(str(path)) == [(1, "first line"), (3, "second")]
    path.write_text("\n \n")
    with pytest.raises(DataError, match=r"corpus.txt: no text \(data.ptx_path\)"):
        read_ptx_lines(str(path))
    with pytest.raises(DataError, match=r"no such file \(data.ptx_path\)"):
        read_ptx_lines(str(tmp_path / "missing.txt"))
