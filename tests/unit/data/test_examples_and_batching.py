import json

import pytest
import torch

from rlhf.config import DataConfig
from rlhf.data.batching import (collate_preferences, collate_sft, pack_examples, pad_pairs, pad_sft_rows,
                                padded_preference_batch, sft_attention_mask)
from rlhf.data.examples import (SFTExample, check_context, encode_chat, fit_length, holdout_split, labelled_example,
                                load_preference_examples, load_sft_examples, train_and_eval, OversizeError)
from rlhf.data.reader import DataError
from rlhf.losses.sft import IGNORE_INDEX as X


@pytest.fixture(scope="module")
def tok():
    from rlhf.assets.tokenizer import build_tokenizer

    return build_tokenizer()


def _jsonl(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_labelled_example_masks_the_prompt():
    assert labelled_example([5, 6], [7, 2]) == ([5, 6, 7, 2], [X, X, 7, 2])


def test_fit_length_policies():
    assert fit_length([1, 2, 3], 3, "error", keep_end=True, what="p") == [1, 2, 3]
    assert fit_length([1, 2, 3, 4], 2, "truncate", keep_end=True, what="p") == [3, 4]
    assert fit_length([1, 2, 3, 4], 2, "truncate", keep_end=False, what="r") == [1, 2]
    with pytest.raises(OversizeError, match="r has 4 tokens, over the limit of 2"):
        fit_length([1, 2, 3, 4], 2, "drop", keep_end=False, what="r")


def test_holdout_split_is_seeded_disjoint_and_complete():
    train, held = holdout_split(10, 0.2, seed=1)
    assert len(held) == 2 and sorted(train + held) == list(range(10))
    assert holdout_split(10, 0.2, seed=1) == (train, held)
    assert holdout_split(10, 0.2, seed=2) != (train, held)
    with pytest.raises(DataError, match="leaves nothing to train on"):
        holdout_split(1, 0.5, seed=0)


def test_pair_rows_train_exactly_on_the_response_and_eos(tok, tmp_path):
    path = _jsonl(tmp_path, [{"q": "hi", "a": "ab"}])
    (ex,), counts = load_sft_examples(path, tok, DataConfig(prompt_key="q", response_key="a"))
    prompt = tok(tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    response = tok("ab", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ex.input_ids == prompt + response
    assert ex.labels == [X] * len(prompt) + response
    assert counts["rows"] == 1


def test_chat_rows_label_every_assistant_turn(tok, tmp_path):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ab"},
                {"role": "user", "content": "more"}, {"role": "assistant", "content": "cd"}]
    ids, labels = encode_chat(tok, messages)
    labelled = [t for t, l in zip(ids, labels) if l != X]
    expected = (tok("ab", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                + tok("cd", add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    assert labelled == expected
    assert all(l == t for t, l in zip(ids, labels) if l != X)
    path = _jsonl(tmp_path, [{"messages": messages}])
    (ex,), _ = load_sft_examples(path, tok, DataConfig())
    assert (ex.input_ids, ex.labels) == (ids, labels)


def test_missing_fields_name_row_and_config_key(tok, tmp_path):
    path = _jsonl(tmp_path, [{"prompt": "a", "response": "b"}, {"text": "c"}])
    with pytest.raises(DataError, match=r":2: .*'prompt' \(data.prompt_key\) or 'messages' \(data.messages_key\)"):
        load_sft_examples(path, tok, DataConfig())
    pref = _jsonl(tmp_path, [{"prompt": "a", "chosen": "b"}], "p.jsonl")
    with pytest.raises(DataError, match=r"p.jsonl:1: .*'rejected' \(data.rejected_key"):
        load_preference_examples(pref, tok, DataConfig())
    with pytest.raises(DataError, match=r"p.jsonl:1: field 'better' must be a string"):
        load_preference_examples(_jsonl(tmp_path, [{"prompt": "a", "better": 1, "rejected": "c"}], "p.jsonl"), tok,
                                 DataConfig(chosen_key="better"))


def test_oversize_responses_drop_truncate_or_error(tok, tmp_path):
    path = _jsonl(tmp_path, [{"prompt": "a", "response": "b"}, {"prompt": "a", "response": "b " * 40}])
    kept, counts = load_sft_examples(path, tok, DataConfig(max_response_tokens=8))
    assert [e.row for e in kept] == [1] and counts["dropped_oversize"] == 1
    kept, counts = load_sft_examples(path, tok, DataConfig(max_response_tokens=8, on_oversize="truncate"))
    assert len(kept[1].input_ids) - kept[1].labels.count(X) == 8 and counts["truncated"] == 1
    with pytest.raises(DataError, match=r":2: response has \d+ tokens, over the limit of 8"):
        load_sft_examples(path, tok, DataConfig(max_response_tokens=8, on_oversize="error"))


def test_train_and_eval_from_fraction(tok, tmp_path):
    path = _jsonl(tmp_path, [{"prompt": f"p{i}", "response": "r"} for i in range(10)])
    data = DataConfig(train_path=path, eval_fraction=0.3)
    train, held, counts = train_and_eval(lambda p: load_sft_examples(p, tok, data), data, seed=0)
    assert len(held) == 3 and len(train) == 7 and counts["eval_rows"] == 3
    assert not {e.row for e in train} & {e.row for e in held}


def _ex(row, n_prompt, n_response):
    ids = list(range(10 * row, 10 * row + n_prompt + n_response))
    return SFTExample(row, ids, [X] * n_prompt + ids[n_prompt:])


def test_pack_examples_greedy_in_order():
    examples = [_ex(1, 2, 2), _ex(2, 1, 2), _ex(3, 3, 3), _ex(4, 1, 1)]  # 4, 3, 6 and 2 tokens
    assert [[e.row for e in r] for r in pack_examples(examples, max_length=8)] == [[1, 2], [3, 4]]
    assert [[e.row for e in r] for r in pack_examples(examples, max_length=7)] == [[1, 2], [3], [4]]
    with pytest.raises(ValueError, match="do not fit"):
        pack_examples([_ex(1, 5, 5)], max_length=7)


def test_collate_packed_rows_positions_segments_and_mask():
    batch = collate_sft([[_ex(1, 1, 1), _ex(2, 1, 2)], [_ex(3, 1, 1)]], pad_id=0)
    assert batch.input_ids.tolist() == [[10, 11, 20, 21, 22], [30, 31, 0, 0, 0]]
    assert batch.labels.tolist() == [[X, 11, X, 21, 22], [X, 31, X, X, X]]
    assert batch.position_ids.tolist() == [[0, 1, 0, 1, 2], [0, 1, 0, 0, 0]]
    assert batch.segment_ids.tolist() == [[1, 1, 2, 2, 2], [1, 1, 0, 0, 0]]
    assert batch.weight() == 4  # labelled tokens 11, 21, 22, 31
    mask = sft_attention_mask(batch.segment_ids)
    assert mask.shape == (2, 1, 5, 5)
    assert mask[0, 0].int().tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0],
                                         [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]
    assert mask[1, 0, 3].int().tolist() == [0, 0, 0, 1, 0]  # padding sees only itself
    unpacked = collate_sft([[_ex(1, 1, 1)], [_ex(2, 1, 2)]], pad_id=0)
    assert sft_attention_mask(unpacked.segment_ids).tolist() == [[1, 1, 0], [1, 1, 1]]
    padded = pad_sft_rows([[_ex(1, 1, 1)]], 3)
    assert len(padded) == 3 and collate_sft(padded, 0).weight() == 1


def test_packed_row_scores_like_its_examples_alone():
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhf.algorithms.sft_losses import sft_micro_batch_loss

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    a, b = SFTExample(1, [3, 4, 5, 6], [X, X, 5, 6]), SFTExample(2, [7, 8, 9], [X, 8, 9])
    packed, _ = sft_micro_batch_loss(model, collate_sft([[a, b]], pad_id=0))
    loss_a, _ = sft_micro_batch_loss(model, collate_sft([[a]], pad_id=0))
    loss_b, _ = sft_micro_batch_loss(model, collate_sft([[b]], pad_id=0))
    # Token mean over the 2 + 2 labelled tokens equals the mean of the two per-example means here.
    assert packed.item() == pytest.approx((loss_a.item() + loss_b.item()) / 2, abs=1e-5)


def _pair(row, prompt, chosen, rejected):
    from rlhf.data.examples import PreferenceExample

    return PreferenceExample(row, "", prompt, chosen, rejected)


def test_collate_preferences_shares_widths_and_pads_with_zero_weight():
    pairs = [_pair(1, [5, 6], [7], [8, 9, 2]), _pair(2, [5], [7, 7], [2])]
    batch = collate_preferences(pairs, pad_id=0)
    assert batch.prompt_len == 2
    assert batch.chosen.tolist() == [[5, 6, 7, 0, 0], [0, 5, 7, 7, 0]]
    assert batch.rejected.tolist() == [[5, 6, 8, 9, 2], [0, 5, 2, 0, 0]]
    assert batch.chosen_response_mask.tolist() == [[1, 0, 0], [1, 1, 0]]
    assert batch.rejected_attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 0, 0]]
    padded, weight = pad_pairs(pairs, 4)
    assert weight.tolist() == [1, 1, 0, 0] and padded[3] is pairs[0]
    full = padded_preference_batch(pairs, 4, 0, torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -4.0]))
    assert len(full) == 4 and full.weight() == 2 and full.ref_chosen_logps.tolist() == [-1, -2, -1, -1]
    assert [len(s) for s in full.split(2)] == [2, 2]


def test_prompt_and_response_limits_must_fit_the_model_context():
    check_context(DataConfig(max_prompt_tokens=48, max_response_tokens=16), 64)
    check_context(DataConfig(max_prompt_tokens=480, max_response_tokens=16), None)  # unknown: not checked
    with pytest.raises(DataError, match=r"data.max_prompt_tokens \+ data.max_response_tokens = 65 is over .* 64"):
        check_context(DataConfig(max_prompt_tokens=49, max_response_tokens=16), 64)
