import pytest
import torch

from rlhf.logprobs import logprobs_from_logits, position_ids_from_attention_mask, response_logprobs


def test_logprobs_match_log_softmax_gather():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g) * 4
    tokens = torch.randint(0, 11, (3, 5), generator=g)
    expected = torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    assert torch.allclose(logprobs_from_logits(logits, tokens), expected, atol=1e-6)


def test_logprobs_bf16_upcast_to_float32():
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(2, 4, 7, generator=g) * 3).to(torch.bfloat16)
    tokens = torch.randint(0, 7, (2, 4), generator=g)
    out = logprobs_from_logits(logits, tokens)
    expected = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    assert out.dtype == torch.float32
    assert torch.allclose(out, expected, atol=1e-6)


def test_logprobs_shape_check():
    with pytest.raises(ValueError):
        logprobs_from_logits(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))


def test_position_ids_from_attention_mask():
    am = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 1, 2, 2, 2], [0, 0, 0, 0, 0]])
    pos = position_ids_from_attention_mask(am)
    assert pos.dtype == torch.long and torch.equal(pos, expected)


def test_response_logprobs_alignment():
    g = torch.Generator().manual_seed(2)
    B, P, R, V = 2, 3, 4, 9
    logits = torch.randn(B, P + R, V, generator=g)
    seq = torch.randint(0, V, (B, P + R), generator=g)
    out = response_logprobs(logits, seq, P)
    assert out.shape == (B, R)
    for b in range(B):
        for i in range(R):
            # token at P + i is predicted by the logits at P + i - 1
            expected = torch.log_softmax(logits[b, P + i - 1], -1)[seq[b, P + i]]
            assert out[b, i].item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError):
        response_logprobs(logits, seq, 0)


def test_response_logprobs_left_padding_matches_unpadded_on_tiny_llama():
    import transformers  # deferred: only this test needs it

    # Llama's RoPE is shift-invariant, so this mainly checks that the mask,
    # position ids and the logits/token offset line up; absolute-position
    # models would additionally break without the position ids.
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
    )
    model = transformers.LlamaForCausalLM(config).float().eval()
    pad = 0
    prompts = [[5, 6, 7, 8], [9, 10], [11]]
    responses = [[12, 13, 14], [15], [16, 17]]
    P = max(map(len, prompts))
    R = max(map(len, responses))
    rows, attn = [], []
    for p, r in zip(prompts, responses):
        rows.append([pad] * (P - len(p)) + p + r + [pad] * (R - len(r)))
        attn.append([0] * (P - len(p)) + [1] * (len(p) + len(r)) + [0] * (R - len(r)))
    seq = torch.tensor(rows)
    attention_mask = torch.tensor(attn)
    with torch.no_grad():
        logits = model(
            input_ids=seq,
            attention_mask=attention_mask,
            position_ids=position_ids_from_attention_mask(attention_mask),
        ).logits
        batched = response_logprobs(logits, seq, P)
        for b, (p, r) in enumerate(zip(prompts, responses)):
            alone_seq = torch.tensor([p + r])
            alone = response_logprobs(model(input_ids=alone_seq).logits, alone_seq, len(p))
            assert torch.allclose(batched[b, : len(r)], alone[0], atol=1e-5), b
