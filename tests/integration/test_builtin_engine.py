"""The built-in rollout engine on the real tiny policy: log-probs, layout, in-place weight loading."""
from __future__ import annotations

import torch
from safetensors.torch import save

from rlhf.models.forward import policy_logprobs
from rlhf.models.loading import load_causal_lm, load_tokenizer
from rlhf.rollout import SamplingSpec
from rlhf.rollout.batch import collate_rollout
from rlhf.rollout.builtin import BuiltinEngine


def _batch(engine, tok, prompts, spec):
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    gens = engine.generate(ids, spec)
    return collate_rollout(ids, prompts, list(range(len(prompts))), gens, tok, policy_version=0), gens


def test_engine_logprobs_match_policy_and_weights_load_in_place(tiny_assets):
    torch.manual_seed(0)
    tok = load_tokenizer(str(tiny_assets.policy))
    policy = load_causal_lm(str(tiny_assets.policy))
    engine = BuiltinEngine(load_causal_lm(str(tiny_assets.policy)), tok)
    prompts = ["Write the letter b five times.", "Repeat the letter k."]  # different lengths: left padding
    spec = SamplingSpec(n=3, max_new_tokens=8, seed=7)
    batch, gens = _batch(engine, tok, prompts, spec)
    assert len(batch) == 6 and [g.prompt_index for g in gens] == [0, 0, 0, 1, 1, 1]
    assert batch.response_mask.sum(1).tolist() == [len(g.token_ids) for g in gens]
    with torch.no_grad():
        recomputed, _ = policy_logprobs(policy, batch.sequences, batch.attention_mask, batch.prompt_len)
    gap = ((recomputed - batch.rollout_logprobs).abs() * batch.response_mask).max()
    assert gap < 1e-4

    # Same seed, same samples: a resumed run draws what the uninterrupted one drew.
    again, _ = _batch(engine, tok, prompts, spec)
    assert torch.equal(again.sequences, batch.sequences)

    # Push perturbed weights: before loading, the engine disagrees with them; after, it matches.
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    state = {k: v.contiguous() for k, v in policy.state_dict().items()}
    engine.load_weights(save(state), version=1)
    assert engine.version == 1
    batch2, _ = _batch(engine, tok, prompts, spec)
    with torch.no_grad():
        recomputed2, _ = policy_logprobs(policy, batch2.sequences, batch2.attention_mask, batch2.prompt_len)
    assert ((recomputed2 - batch2.rollout_logprobs).abs() * batch2.response_mask).max() < 1e-4
