"""Multi-turn episodes: the response mask covers exactly the policy's tokens and earlier turns'
token ids are never changed (issue 17, part 3). Real tokenizer and built-in engine; the vLLM
engine runs the same checks in tests/integration/test_episodes_vllm.py."""
from __future__ import annotations

from typing import Optional

import pytest
import torch

from rlhf.envs.base import StepResult
from rlhf.envs.pool import LocalEnvironments
from rlhf.models.loading import load_causal_lm, load_tokenizer
from rlhf.rollout.builtin import BuiltinEngine
from rlhf.rollout.episodes import EpisodeSettings, TurnTemplate, episode_metrics, episodes_to_rollout, run_episodes
from rlhf.rollout.sampling import SamplingSpec


def chat_ids(tokenizer, messages, generation_prompt):
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class ThreeTurns:
    """Answers the first two policy turns with a numbered observation and ends at the third;
    pays 1 per turn (so the episode reward is the sum: 3)."""

    def reset(self, row: dict) -> Optional[str]:
        self.turn, self.tag = 0, row["tag"]
        return None

    def step(self, response: str) -> StepResult:
        self.turn += 1
        return StepResult(f"{self.tag} observation {self.turn}", 1.0, self.turn == 3, {"tool_calls": 1})


def check_episode_layout(rollout, contexts_per_turn, generations_per_turn, episodes, template):
    """Shared by the built-in (here) and vLLM (integration) checks."""
    for row, episode in enumerate(episodes):
        tokens = rollout.sequences[row, rollout.prompt_len:][: len(episode.tokens)].tolist()
        mask = rollout.response_mask[row].tolist()
        position, expected_mask, expected_lp = 0, [], []
        for turn, (contexts, generations) in enumerate(zip(contexts_per_turn, generations_per_turn)):
            context, gen = contexts[row], generations[row]
            # Earlier turns' ids are exactly what the engine saw and sampled: the context of each turn
            # is the prompt plus everything before, unchanged, and the final row extends it.
            assert context == episode.prompt_ids + tokens[:position]
            assert tokens[position:position + len(gen.token_ids)] == gen.token_ids
            expected_mask += [1.0] * len(gen.token_ids)
            expected_lp += gen.logprobs
            position += len(gen.token_ids)
            if turn < 2:  # the observation turn: context tokens, mask 0
                ended_with_eos = gen.token_ids[-1:] == [template.eos_id]
                obs = template.observation_ids(f"{episode.prompt_index} observation {turn + 1}", ended_with_eos, 64)
                assert tokens[position:position + len(obs)] == obs
                expected_mask += [0.0] * len(obs)
                expected_lp += [0.0] * len(obs)
                position += len(obs)
        assert position == len(episode.tokens)
        assert mask == expected_mask + [0.0] * (len(mask) - position)
        lp = rollout.rollout_logprobs[row, :position]
        assert torch.allclose(lp, torch.tensor(expected_lp)), row
        assert [t["role"] for t in episode.turns] == ["assistant", "tool", "assistant", "tool", "assistant"]


@pytest.fixture(scope="module")
def engine(tiny_assets):
    tokenizer = load_tokenizer(str(tiny_assets.policy))
    return BuiltinEngine(load_causal_lm(str(tiny_assets.policy), "float32"), tokenizer), tokenizer


def test_three_turn_episode_mask_covers_exactly_the_policy_tokens(engine):
    builtin, tokenizer = engine
    prompts = [chat_ids(tokenizer, [{"role": "user", "content": q}], True)
               for q in ("Repeat the letter a.", "Write the letter k three times.")]
    contexts_per_turn, generations_per_turn = [], []

    def generate(contexts, turn):
        contexts_per_turn.append([list(c) for c in contexts])
        gens = builtin.generate(contexts, SamplingSpec(n=1, max_new_tokens=6, seed=turn))
        generations_per_turn.append(gens)
        return gens

    envs = LocalEnvironments(f"{__name__}:ThreeTurns")
    settings = EpisodeSettings(max_turns=4, max_total_tokens=200, env_role="tool", tool_output_tokens=64)
    episodes, env_time = run_episodes(generate, envs, prompts, [{"tag": 0}, {"tag": 1}], 1, tokenizer, settings)
    assert len(contexts_per_turn) == 3 and all(e.done and not e.truncated for e in episodes)
    rollout = episodes_to_rollout(episodes, ["a", "b"], [1, 2], [{"answer": "x"}, {"answer": "y"}],
                                  tokenizer.pad_token_id, tokenizer, policy_version=0)
    check_episode_layout(rollout, contexts_per_turn, generations_per_turn, episodes, TurnTemplate(tokenizer, "tool"))
    assert rollout.columns == [{"answer": "x"}, {"answer": "y"}]
    assert [e.reward for e in episodes] == [3.0, 3.0]
    metrics = episode_metrics(episodes, env_time)
    assert metrics["episode/turns_mean"] == 3 and metrics["episode/tool_calls_mean"] == 3
    assert metrics["episode/truncated_frac"] == 0


def test_budgets_truncate_episodes(engine):
    builtin, tokenizer = engine
    prompt = chat_ids(tokenizer, [{"role": "user", "content": "Hi"}], True)
    generate = lambda contexts, turn: builtin.generate(contexts, SamplingSpec(n=1, max_new_tokens=6, seed=turn))
    envs = LocalEnvironments(f"{__name__}:ThreeTurns")
    by_turns, _ = run_episodes(generate, envs, [prompt], [{"tag": 0}], 2, tokenizer,
                               EpisodeSettings(max_turns=2, max_total_tokens=200))
    assert all(e.truncated and sum(t["role"] == "assistant" for t in e.turns) == 2 for e in by_turns)
    by_tokens, _ = run_episodes(generate, envs, [prompt], [{"tag": 0}], 2, tokenizer,
                                EpisodeSettings(max_turns=4, max_total_tokens=8))
    assert all(e.truncated and len(e.tokens) <= 8 for e in by_tokens)


def test_turn_template_reads_the_tool_turn_off_the_chat_template(engine):
    _, tokenizer = engine
    template = TurnTemplate(tokenizer, "tool")
    assert (template.close, template.close_after_eos) == ("</s>", "")
    assert template.before == "<|user|>\n<result>" and template.after == "</result><|end|>\n<|assistant|>\n"
    # Tokenising only the new turn gives the ids of the whole conversation tokenised at once.
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    head = chat_ids(tokenizer, messages, False)
    whole = chat_ids(tokenizer, messages + [{"role": "tool", "content": "51"}], True)
    assert whole == head + template.observation_ids("51", ended_with_eos=True, max_tokens=64)
    with pytest.raises(ValueError, match="rollout.env_role='robot'"):
        TurnTemplate(tokenizer, "robot")


def test_episode_reward_is_step_rewards_plus_weighted_source():
    from types import SimpleNamespace

    from rlhf.records import EpisodeOutcome, RolloutBatch
    from rlhf.rollout.episodes import uses_reward_source, with_episode_rewards

    batch = RolloutBatch(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long), torch.ones(2, 1),
                         torch.zeros(2, 1), 2, ["a", "b"], ["x", "y"], [1, 2], 0)
    source = torch.tensor([0.5, -1.0])
    single = SimpleNamespace(env=None, env_reward_weight=1.0)
    assert with_episode_rewards(single, batch, source) is source and uses_reward_source(single)
    batch.episodes = EpisodeOutcome(torch.tensor([1.0, 2.0]), {}, [[], []])
    weighted = SimpleNamespace(env="m:C", env_reward_weight=2.0)
    # 1 + 2*0.5 = 2; 2 + 2*(-1) = 0
    assert with_episode_rewards(weighted, batch, source).tolist() == [2.0, 0.0]
    unused = SimpleNamespace(env="m:C", env_reward_weight=0.0)
    assert not uses_reward_source(unused) and with_episode_rewards(unused, batch, None).tolist() == [1.0, 2.0]
