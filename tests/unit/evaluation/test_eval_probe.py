"""The probe's model loops on a real (tiny, random) Llama: greedy continuations equal Hugging Face's
greedy `generate`, and the text NLL equals a per-row computation; the checker and the readers."""
from __future__ import annotations

import math

import pytest
import torch

from rlhf.assets.models import TinyModelSpec, build_policy
from rlhf.data.reader import DataError
from rlhf.evaluation.probe import (first_word_matches, greedy_continuations, read_general_prompts, read_general_text,
                                   run_probe, text_nll)

PAD = 0


@pytest.fixture(scope="module")
def model():
    spec = TinyModelSpec(hidden_size=64, num_heads=2, num_kv_heads=None, intermediate_size=64)
    return build_policy(spec, vocab_size=50, pad_token_id=PAD, bos_token_id=1, eos_token_id=2, seed=3)


def test_greedy_continuations_match_hf_generate_with_left_padding(model):
    prompts = [[1, 5, 6, 7, 8], [1, 9], [1, 30, 31, 32]]
    got = greedy_continuations(model, prompts, max_new_tokens=4, pad_id=PAD)
    for prompt, continuation in zip(prompts, got):
        ids = torch.tensor([prompt])
        expected = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4,
                                  do_sample=False, pad_token_id=PAD)[0, len(prompt):].tolist()
        assert continuation == expected


def test_text_nll_equals_a_row_by_row_sum(model):
    rows = [[1, 5, 6, 7, 2], [1, 9, 2]]
    nll, tokens = text_nll(model, rows, PAD)
    expected = 0.0
    for row in rows:
        ids = torch.tensor([row])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0, :-1], dim=-1)
        expected -= float(logprobs.gather(1, ids[0, 1:, None]).sum())
    assert tokens == 4 + 2
    assert nll == pytest.approx(expected, rel=1e-5)
    assert math.exp(nll / tokens) > 1.0


def test_run_probe_restores_training_mode(model):
    model.train()
    result = run_probe(model, [[1, 5, 2]], [[1, 5]], 2, PAD)
    assert model.training and len(result["continuations"][0]) == 2 and result["tokens"] == 2
    model.eval()


def test_first_word_matches():
    assert first_word_matches(" woke up early", "woke")
    assert first_word_matches("Quiet.", "quiet")
    assert not first_word_matches("", "quiet") and not first_word_matches(" the quiet", "quiet")


def test_readers_name_file_and_row(tmp_path):
    text = tmp_path / "g.txt"
    text.write_text("one\n\ntwo\n")
    assert read_general_text(str(text)) == [(1, "one"), (3, "two")]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "The sun", "answer": "rose"}\n{"prompt": "x"}\n')
    with pytest.raises(DataError, match=r"p.jsonl:2: missing field 'answer'"):
        read_general_prompts(str(prompts))
    with pytest.raises(DataError, match="no such file"):
        read_general_text(str(tmp_path / "none.txt"))
