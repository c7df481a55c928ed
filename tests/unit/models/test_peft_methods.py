"""IA3, prompt tuning and prefix tuning on the real tiny policy: log-probs line up with the tokens
(padding and packing included), IA3's merged weights, the adapter-free reference, save and load."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from peft import PeftModel

from rlhf.config import ModelConfig, PeftConfig
from rlhf.data.batching import collate_sft, sft_attention_mask
from rlhf.data.examples import SFTExample
from rlhf.logprobs import response_logprobs
from rlhf.models.adapters import adapters_disabled, apply_peft, merged_state_dict, save_adapter
from rlhf.models.forward import causal_lm_logits, policy_logprobs
from rlhf.models.loading import load_causal_lm
from rlhf.models.virtual_tokens import extend_attention_mask, lm_logits

VIRTUAL = 3
ROW = [1, 40, 41, 42, 43, 44, 45]  # 4 prompt tokens, 3 response tokens


def _model(path: str, method: str, **settings) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(path=path, peft=PeftConfig(type=method, num_virtual_tokens=VIRTUAL, **settings))
    model = apply_peft(load_causal_lm(path), cfg, "CAUSAL_LM").eval()
    with torch.no_grad():  # stand-in for training: move the learned parameters away from their start
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    return model


def _peft_own_logits(model, row: list[int]) -> torch.Tensor:
    """PEFT's own forward on one unpadded row (no position ids given), virtual positions dropped: [T, V]."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([row])).logits[0]
    return logits[-len(row):]


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_left_padded_logprobs_match_peft_on_the_unpadded_row_by_hand(tiny_assets, method):
    model = _model(str(tiny_assets.policy), method)
    # Row 0 left-padded by two to prompt width 6 ([pad pad | 4 prompt | 3 response]), row 1 unpadded-width.
    sequences = torch.tensor([[0, 0, *ROW], [1, 50, 51, 52, 53, 54, 55, 56, 57]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9])
    prompt_len = 6
    with torch.no_grad():
        logits = causal_lm_logits(model, sequences, mask)
        logprobs, _ = policy_logprobs(model, sequences, mask, prompt_len)
    assert logits.shape == (2, 9, model.config.vocab_size)
    # By hand: log p(ROW[4+i] | ROW[:4+i]) = log_softmax(PEFT's logits at position 3+i)[ROW[4+i]].
    own = torch.log_softmax(_peft_own_logits(model, ROW), dim=-1)
    expected = torch.stack([own[3 + i, ROW[4 + i]] for i in range(3)])
    assert torch.allclose(logprobs[0, :3], expected, atol=1e-5), (logprobs[0, :3], expected)
    own_row1 = _peft_own_logits(model, sequences[1].tolist())
    assert torch.allclose(logits[1], own_row1, atol=1e-5)
    # The virtual tokens matter: the base model scores the row differently, and is what the adapters-off
    # context (the folded reference) computes.
    base = load_causal_lm(str(tiny_assets.policy)).eval()
    with torch.no_grad():
        base_logprobs, _ = policy_logprobs(base, sequences, mask, prompt_len)
        with adapters_disabled(model):
            off, _ = policy_logprobs(model, sequences, mask, prompt_len)
    assert torch.allclose(off, base_logprobs, atol=1e-6)
    assert not torch.allclose(logprobs, base_logprobs, atol=1e-2)


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_packed_sft_rows_score_like_their_examples_alone(tiny_assets, method):
    model = _model(str(tiny_assets.policy), method)
    a = SFTExample(input_ids=[1, 40, 41, 42, 43], labels=[-100, -100, 41, 42, 43], row=1)
    b = SFTExample(input_ids=[1, 50, 51, 52], labels=[-100, -100, 51, 52], row=2)
    packed = collate_sft([[a, b]], pad_id=0)
    with torch.no_grad():
        logits = lm_logits(model, packed.input_ids, sft_attention_mask(packed.segment_ids), packed.position_ids)[0]
    assert torch.allclose(logits[:5], _peft_own_logits(model, a.input_ids), atol=1e-5)
    assert torch.allclose(logits[5:9], _peft_own_logits(model, b.input_ids), atol=1e-5)


def test_extend_attention_mask_by_hand():
    padded = torch.tensor([[0, 1, 1]])
    assert extend_attention_mask(padded, 2, True).tolist() == [[1, 1, 0, 1, 1]]
    packed = torch.tensor([[[[1, 0], [0, 1]]]], dtype=torch.bool)  # two one-token examples
    prefix = extend_attention_mask(packed, 1, virtual_queries=False)
    assert prefix.int().tolist() == [[[[1, 1, 0], [1, 0, 1]]]]
    prompt = extend_attention_mask(packed, 2, virtual_queries=True)
    assert prompt.int().tolist() == [[[[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 1]]]]


def test_ia3_merged_weights_reproduce_the_scaled_model(tiny_assets):
    path = str(tiny_assets.policy)
    model = _model(path, "ia3", target_modules=["k_proj", "v_proj", "down_proj", "up_proj"],
                   feedforward_modules=["down_proj"])
    scaled = [n for n, p in model.named_parameters() if p.requires_grad]
    assert scaled and all("ia3_l" in n for n in scaled) and any("up_proj" in n for n in scaled)
    merged = merged_state_dict(model)
    plain = load_causal_lm(path).eval()
    assert set(merged) == set(plain.state_dict())
    plain.load_state_dict(merged)
    tokens = torch.tensor([ROW])
    with torch.no_grad():
        adapted, reproduced, base = (m(input_ids=tokens).logits for m in (model, plain, load_causal_lm(path)))
        with adapters_disabled(model):
            off = model(input_ids=tokens).logits
    assert torch.allclose(reproduced, adapted, atol=1e-5)
    assert torch.allclose(off, base, atol=1e-6) and not torch.allclose(adapted, base, atol=1e-2)


def test_virtual_tokens_refuse_to_merge(tiny_assets):
    with pytest.raises(ValueError, match="virtual tokens do not merge"):
        merged_state_dict(_model(str(tiny_assets.policy), "prompt_tuning"))


@pytest.mark.parametrize("method", ["ia3", "prompt_tuning", "prefix_tuning"])
def test_saved_adapter_loads_back_with_identical_outputs(tiny_assets, tmp_path, method):
    path = str(tiny_assets.policy)
    model = _model(path, method)
    save_adapter(model, str(tmp_path))
    loaded = PeftModel.from_pretrained(load_causal_lm(path), str(tmp_path)).eval()
    sequences = torch.tensor([[0, *ROW]])
    mask = torch.tensor([[0] + [1] * len(ROW)])
    with torch.no_grad():
        assert torch.equal(causal_lm_logits(loaded, sequences, mask), causal_lm_logits(model, sequences, mask))


def test_critic_cannot_take_virtual_tokens(tiny_assets):
    cfg = ModelConfig(path=str(tiny_assets.policy), peft=PeftConfig(type="prompt_tuning"))
    with pytest.raises(ValueError, match="prompt_tuning is for causal LMs"):
        apply_peft(load_causal_lm(str(tiny_assets.policy)), dataclasses.replace(cfg), "SEQ_CLS")


def test_ia3_critic_reads_values_and_trains_its_head(tiny_assets):
    from rlhf.models.forward import response_values
    from rlhf.models.loading import load_value_model

    path = str(tiny_assets.policy)
    critic = apply_peft(load_value_model(path), ModelConfig(path=path, peft=PeftConfig(type="ia3")), "SEQ_CLS")
    trained = {n for n, p in critic.named_parameters() if p.requires_grad}
    assert any("ia3_l" in n for n in trained) and any("score" in n for n in trained)
    values = response_values(critic, torch.tensor([ROW]), torch.ones(1, len(ROW), dtype=torch.long), 4)
    assert values.shape == (1, 3) and torch.isfinite(values).all()


def test_virtual_tokens_count_against_the_context():
    from rlhf.config import DataConfig
    from rlhf.data.examples import check_context
    from rlhf.data.reader import DataError

    data = DataConfig(train_path="/d", max_prompt_tokens=200, max_response_tokens=50)
    check_context(data, 256)
    with pytest.raises(DataError, match=r"\+ model.peft.num_virtual_tokens = 258 is over the model's context of 256"):
        check_context(data, 256, virtual_tokens=8)
    assert ModelConfig(path="/m", peft=PeftConfig(type="prefix_tuning", num_virtual_tokens=5)).virtual_tokens == 5
    assert ModelConfig(path="/m", peft=PeftConfig(type="ia3", num_virtual_tokens=5)).virtual_tokens == 0
