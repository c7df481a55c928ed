"""Multi-turn episodes, token in and token out: the policy writes, the environment answers, repeat.

Each turn the engines generate for the batch of still-active episodes, given each episode's
token ids so far (prompt, earlier policy turns, observations) exactly as sampled: earlier turns
are never decoded and re-tokenised, so what is trained is what was sampled. An observation
enters as the chat template's tokens for a `rollout.env_role` turn (plus whatever closes the
policy's turn when it did not end with EOS); those tokens are context, with response mask 0
and log-prob 0. An episode ends when the environment says done, after `max_turns` policy
turns, or when its `max_total_tokens` budget (everything after the prompt) is spent; the last
two count as truncated. Its reward is the sum of its step rewards.

The result is an ordinary RolloutBatch ([prompt | policy, observation, policy, ...]), so the
advantages and losses need nothing new: they already skip masked positions inside a response
(rlhf.advantages) and put the sequence score on the last position where the mask is 1.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

import torch

from rlhf.envs.base import StepResult
from rlhf.records import EpisodeOutcome, RolloutBatch
from rlhf.rollout.sampling import Generation, SamplingSpec


@dataclass(frozen=True)
class EpisodeSettings:
    max_turns: int = 4
    """Policy turns per episode at most."""
    max_total_tokens: int = 256
    """Tokens after the prompt (policy and observation tokens together) at most."""
    env_role: str = "tool"
    """The chat role observations are written as."""
    tool_output_tokens: int = 64
    """An observation is cut to this many tokens before it enters the conversation."""


def episode_settings(rollout) -> EpisodeSettings:
    """The episode limits of a RolloutConfig."""
    return EpisodeSettings(rollout.max_turns, rollout.max_total_tokens, rollout.env_role, rollout.tool_output_tokens)


class EnvironmentPool(Protocol):
    """Hosts one environment per episode key (in process, or the Ray group of actors/env.py)."""

    def reset(self, keys: list[int], rows: list[dict]) -> list[Optional[str]]: ...

    def step(self, keys: list[int], responses: list[str]) -> list[StepResult]: ...


class TurnTemplate:
    """The token ids that follow a policy turn to open an observation turn, read off the chat template.

    Rendering a probe conversation with and without an extra `role` turn gives the text the
    template puts between turns; only that text is tokenised, never the conversation so far.
    """

    def __init__(self, tokenizer, role: str) -> None:
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id
        user = [{"role": "user", "content": "Q"}]
        answered = user + [{"role": "assistant", "content": "A"}]
        render = lambda msgs, gen: tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        asking, closed = render(user, True), render(answered, False)
        if not closed.startswith(asking + "A"):
            raise ValueError("the chat template does not render an assistant turn after its generation prompt; "
                             "multi-turn rollouts need a template that does")
        self.close = closed[len(asking) + 1:]
        """Text that ends an assistant turn (e.g. the eos token, or "<|im_end|>\\n")."""
        eos_text = tokenizer.eos_token or ""
        self.close_after_eos = self.close[len(eos_text):] if eos_text and self.close.startswith(eos_text) else self.close
        try:
            with_obs = render(answered + [{"role": role, "content": "\x00"}], True)
        except Exception as err:  # jinja's raise_exception, e.g. "Unknown role"
            raise ValueError(f"rollout.env_role={role!r}: the chat template cannot render that role ({err}); "
                             "set rollout.env_role=user or use a template that knows the role") from None
        if not with_obs.startswith(closed) or "\x00" not in with_obs:
            raise ValueError(f"rollout.env_role={role!r}: the chat template changes earlier turns when a {role} "
                             "turn is added; token-in token-out needs an append-only template")
        self.before, self.after = with_obs[len(closed):].split("\x00")

    def observation_ids(self, observation: str, ended_with_eos: bool, max_tokens: int) -> list[int]:
        """Context tokens after a policy turn: its closing (if the policy did not emit EOS), the
        observation turn (observation cut to `max_tokens` tokens) and the next generation prompt."""
        ids = self.tokenizer(observation, add_special_tokens=False)["input_ids"]
        if len(ids) > max_tokens:
            observation = self.tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)
        text = (self.close_after_eos if ended_with_eos else self.close) + self.before + observation + self.after
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass
class Episode:
    prompt_index: int
    """Which prompt of the step this episode answers; episodes of one prompt are consecutive."""
    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    """Everything after the prompt, policy and observation tokens in order."""
    policy_mask: list[int] = field(default_factory=list)
    """1 on the policy's own tokens, 0 on observation (context) tokens; len == len(tokens)."""
    logprobs: list[float] = field(default_factory=list)
    """The engine's log-prob of each policy token, 0 on observation tokens."""
    turns: list[dict] = field(default_factory=list)
    """The transcript after the prompt: {"role", "content"} per turn."""
    reward: float = 0.0
    """Sum of the environment's step rewards."""
    done: bool = False
    truncated: bool = False
    tool_calls: int = 0
    tool_errors: int = 0

    def context(self) -> list[int]:
        return self.prompt_ids + self.tokens

    def add(self, ids: list[int], policy: bool, logprobs: Optional[list[float]] = None) -> None:
        self.tokens += ids
        self.policy_mask += [int(policy)] * len(ids)
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(ids)


def run_episodes(
    generate: Callable[[list[list[int]], int], list[Generation]],
    envs: EnvironmentPool,
    prompt_ids: list[list[int]],
    rows: list[dict],
    n: int,
    tokenizer,
    settings: EpisodeSettings,
) -> tuple[list[Episode], float]:
    """`n` episodes per prompt, played turn by turn; returns them (in prompt order) and the seconds
    spent waiting on the environments. `generate(contexts, turn)` samples one continuation per
    context (the caller seeds it per step and turn)."""
    template = TurnTemplate(tokenizer, settings.env_role)
    episodes = [Episode(i, list(ids)) for i, ids in enumerate(prompt_ids) for _ in range(n)]
    env_time = time.perf_counter()
    first = envs.reset(list(range(len(episodes))), [rows[e.prompt_index] for e in episodes])
    env_time = time.perf_counter() - env_time
    for episode, observation in zip(episodes, first):
        if observation is not None:
            _observe(episode, observation, template, settings, after_eos=True)
    for turn in range(settings.max_turns):
        active = [k for k, e in enumerate(episodes) if not e.done]
        if not active:
            break
        generations = generate([episodes[k].context() for k in active], turn)
        texts = []
        for k, gen in zip(active, generations):
            episode = episodes[k]
            room = settings.max_total_tokens - len(episode.tokens)
            ids, logprobs = gen.token_ids[:room], gen.logprobs[:room]
            episode.add(ids, policy=True, logprobs=logprobs)
            text = tokenizer.decode(ids, skip_special_tokens=True)
            episode.turns.append({"role": "assistant", "content": text})
            texts.append(text)
        started = time.perf_counter()
        results = envs.step(active, texts)
        env_time += time.perf_counter() - started
        for k, result, gen in zip(active, results, generations):
            episode = episodes[k]
            episode.reward += float(result.reward)
            episode.tool_calls += int(result.info.get("tool_calls", 0))
            episode.tool_errors += int(result.info.get("tool_errors", 0))
            if result.done:
                episode.done = True
            elif turn == settings.max_turns - 1 or len(episode.tokens) >= settings.max_total_tokens:
                episode.done = episode.truncated = True
            else:
                ended_with_eos = bool(episode.tokens) and episode.tokens[-1] == template.eos_id
                _observe(episode, result.observation or "", template, settings, after_eos=ended_with_eos)
    return episodes, env_time


def _observe(episode: Episode, observation: str, template: TurnTemplate, settings: EpisodeSettings,
             after_eos: bool) -> None:
    """Append an observation turn, or end the episode as truncated when it does not fit the budget."""
    ids = template.observation_ids(observation, after_eos, settings.tool_output_tokens)
    if len(episode.tokens) + len(ids) >= settings.max_total_tokens:  # no room left for the policy to answer
        episode.done = episode.truncated = True
        return
    episode.add(ids, policy=False)
    episode.turns.append({"role": settings.env_role, "content": observation})


def episodes_to_rollout(episodes: list[Episode], prompt_texts: list[str], prompt_rows: list[int],
                        prompt_columns: list[dict], pad_id: int, tokenizer, policy_version: int,
                        env_time_s: float = 0.0) -> RolloutBatch:
    """[left-padded prompt | right-padded episode] rows; the response mask is the policy mask."""
    prompt_len = max(len(e.prompt_ids) for e in episodes)
    response_len = max(1, max(len(e.tokens) for e in episodes))
    rows = len(episodes)
    sequences = torch.full((rows, prompt_len + response_len), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(sequences)
    response_mask = torch.zeros(rows, response_len)
    rollout_logprobs = torch.zeros(rows, response_len)
    for row, e in enumerate(episodes):
        p, n = len(e.prompt_ids), len(e.tokens)
        sequences[row, prompt_len - p:prompt_len] = torch.tensor(e.prompt_ids)
        attention_mask[row, prompt_len - p:prompt_len + n] = 1
        if n:
            sequences[row, prompt_len:prompt_len + n] = torch.tensor(e.tokens)
            response_mask[row, :n] = torch.tensor(e.policy_mask, dtype=torch.float32)
            rollout_logprobs[row, :n] = torch.tensor(e.logprobs)
    return RolloutBatch(
        sequences=sequences, attention_mask=attention_mask, response_mask=response_mask,
        rollout_logprobs=rollout_logprobs, prompt_len=prompt_len,
        prompts=[prompt_texts[e.prompt_index] for e in episodes],
        responses=[tokenizer.decode(e.tokens, skip_special_tokens=True) for e in episodes],
        prompt_index=[prompt_rows[e.prompt_index] for e in episodes], policy_version=policy_version,
        columns=[prompt_columns[e.prompt_index] for e in episodes] if prompt_columns else [],
        episodes=EpisodeOutcome(torch.tensor([e.reward for e in episodes], dtype=torch.float32),
                                episode_metrics(episodes, env_time_s), [e.turns for e in episodes]),
    )


def episode_metrics(episodes: list[Episode], env_time_s: float) -> dict[str, float]:
    """episode/turns_mean, tool_calls_mean, tool_errors (total), truncated_frac, env_time_s, reward_mean."""
    count = len(episodes) or 1
    return {
        "episode/turns_mean": sum(sum(t["role"] == "assistant" for t in e.turns) for e in episodes) / count,
        "episode/tool_calls_mean": sum(e.tool_calls for e in episodes) / count,
        "episode/tool_errors": float(sum(e.tool_errors for e in episodes)),
        "episode/truncated_frac": sum(e.truncated for e in episodes) / count,
        "episode/env_time_s": env_time_s,
        "episode/env_reward_mean": sum(e.reward for e in episodes) / count,
    }


def generate_episode_rollout(rollout_cfg, engines: list, envs: EnvironmentPool, tokenizer, prompts: list,
                             spec_for_engine: Callable[[int], SamplingSpec], n: int, policy_version: int,
                             fetch: Callable[[list], list]) -> RolloutBatch:
    """The driver's generate phase when `rollout.env` is set: `n` episodes per prompt (rlhf.data.prompts.Prompt)
    played on the rollout engines (actor handles) and the environments. Turn t samples with each
    engine's spec for the step, seed mixed with t, one continuation per episode."""
    from dataclasses import replace

    from rlhf.rollout.dispatch import generate_on_engines

    def generate(contexts: list[list[int]], turn: int) -> list[Generation]:
        per_turn = lambda i: replace(spec_for_engine(i), n=1, seed=spec_for_engine(i).seed * 1_009 + turn)
        return generate_on_engines(engines, contexts, per_turn, fetch)

    rows = [{**p.columns, "prompt": p.text} for p in prompts]
    episodes, env_time = run_episodes(generate, envs, [p.token_ids for p in prompts], rows, n, tokenizer,
                                      episode_settings(rollout_cfg))
    return episodes_to_rollout(episodes, [p.text for p in prompts], [p.row for p in prompts],
                               [p.columns for p in prompts], tokenizer.pad_token_id, tokenizer, policy_version,
                               env_time)


def uses_reward_source(rollout_cfg) -> bool:
    """Whether `reward.source` is scored: always for single turn; for episodes unless its weight is 0."""
    return not rollout_cfg.env or rollout_cfg.env_reward_weight != 0


def with_episode_rewards(rollout_cfg, rollout: RolloutBatch, source_scores: Optional[torch.Tensor]) -> torch.Tensor:
    """[B] scores: the source's for single turn (unchanged); for episodes the summed step rewards plus
    `rollout.env_reward_weight` times the source's (left out when it was not scored)."""
    if rollout.episodes is None:
        return source_scores
    total = rollout.episodes.rewards.clone()
    if source_scores is not None:
        total = total + rollout_cfg.env_reward_weight * source_scores
    return total
