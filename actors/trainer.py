"""Trained roles (policy, critic; the reward model in rm mode): one DeepSpeed data-parallel replica per actor."""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from actors.common import actor, node_ip, prepare_process, where_am_i
from rlhf.algorithms.objectives import build_objective
from rlhf.algorithms.sft_losses import reference_kl_micro_batch_loss, sft_micro_batch_loss
from rlhf.config import Config
from rlhf.data.batching import collate_sft
from rlhf.data.pretrain_mix import ptx_examples, ptx_indices, read_ptx_lines
from rlhf.evaluation.probe import run_probe
from rlhf.models.compile import compile_blocks
from rlhf.models.forward import in_micro_batches, policy_logprobs, response_values
from rlhf.models.adapters import (adapter_parameter_bytes, adapters_disabled, apply_peft, frozen_parameter_bytes,
                                  is_peft)
from rlhf.models.loading import load_causal_lm, load_reference_model, load_tokenizer, load_value_model
from rlhf.models.weight_sources import manifest, weight_sources
from rlhf.modes.reference import mix_anchored_to_reference, reference_copy_in_policy
from rlhf.records import TrainStats
from rlhf.rollout.sync_group import SyncGroup, plan_spec_buckets
from rlhf.rollout.sync_group import SyncSettings
from rlhf.training.deepspeed_model import (DeepSpeedModel, deepspeed_config, enable_gradient_checkpointing,
                                           zero3_gathered, zero3_init_config)
from rlhf.training.devices import actor_device, process_group_backend
from rlhf.training.distributed import free_port, init_process_group
from rlhf.training.micro_batches import plan_micro_batches, response_forward


@actor
class TrainingActor:
    """Holds one replica of the policy, the critic or a reward model in training inside a DeepSpeed engine."""

    def __init__(self, role: str, cfg: Config, rank: int, world_size: int) -> None:
        if role not in ("policy", "critic", "reward"):
            raise ValueError(f"unknown trained role {role!r}")
        self.role, self.cfg, self.rank, self.world_size = role, cfg, rank, world_size
        resources = getattr(cfg.ray, role)
        prepare_process(resources.num_cpus, cfg.trainer.seed + rank)
        self.num_gpus = resources.num_gpus
        self.device = actor_device(resources.num_gpus)
        self.model: Optional[DeepSpeedModel] = None
        self.weight_sync: Optional[SyncGroup] = None
        self.objective = build_objective(cfg, role)
        self.ptx_rows: list = []
        self.reference_model: Optional[torch.nn.Module] = None

    def where(self) -> dict:
        return where_am_i(self.device)

    def master_address(self) -> tuple[str, int]:
        return node_ip(), free_port()

    def setup(self, master_addr: str, master_port: int) -> None:
        """Join the process group and build the engine; all replicas call it concurrently."""
        cfg = self.cfg
        init_process_group(self.rank, self.world_size, master_addr, master_port, cfg.ray.collective_timeout_s,
                           process_group_backend(self.num_gpus))
        # Same seed on every rank: a fresh critic head must start identical everywhere.
        torch.manual_seed(cfg.trainer.seed)
        lr = cfg.trainer.critic_learning_rate if self.role == "critic" else cfg.trainer.learning_rate
        per_replica = cfg.trainer.mini_batch_size // self.world_size
        ds_config = deepspeed_config(
            zero_stage=cfg.trainer.zero_stage,
            micro_batch_size=cfg.trainer.micro_batch_size,
            grad_accum_steps=per_replica // cfg.trainer.micro_batch_size,
            world_size=self.world_size,
            learning_rate=lr,
            weight_decay=cfg.trainer.weight_decay,
            max_grad_norm=cfg.trainer.max_grad_norm,
            dtype=cfg.model.dtype,
            on_gpu=self.device.type == "cuda",
            offload_optimizer=cfg.trainer.offload_optimizer,
            offload_params=cfg.trainer.offload_params,
        )
        # ZeRO-3 with zero.Init: transformers builds the model already partitioned while this config lives.
        self._zero_init = zero3_init_config(ds_config) if cfg.trainer.zero_init else None
        method = cfg.model.peft_method
        quantization = cfg.model.quantization
        if self.role == "policy":
            module = load_causal_lm(cfg.model.path, cfg.model.dtype, cfg.model.trust_remote_code, quantization)
            module = apply_peft(module, cfg.model, "CAUSAL_LM", quantized=quantization != "none")
        elif self.role == "reward":
            # Reward-model training: from a reward model, or from the policy with a fresh scalar head.
            module = load_value_model(cfg.model.reward_path or cfg.model.path, cfg.model.dtype,
                                      cfg.model.trust_remote_code)
        else:
            # The critic adapts like the policy (lora, ia3: the modes with a critic cannot use the others).
            use_adapters = method is not None and cfg.model.lora.critic
            quantization = quantization if use_adapters else "none"
            start = cfg.model.critic_path or cfg.model.reward_path or cfg.model.path
            module = load_value_model(start, cfg.model.dtype, cfg.model.trust_remote_code, quantization)
            if start == cfg.model.path:
                # A fresh random head would put per-token noise of the order of the rewards
                # themselves into the first advantages; from zero, early PPO is REINFORCE.
                with zero3_gathered([module.score.weight], cfg.trainer.zero_init):
                    torch.nn.init.zeros_(module.score.weight)
            if use_adapters:
                module = apply_peft(module, cfg.model, "SEQ_CLS", quantized=quantization != "none")
        if cfg.trainer.gradient_checkpointing:
            enable_gradient_checkpointing(module)
        if cfg.trainer.compile:
            compile_blocks(module)
        self.model = DeepSpeedModel(module, ds_config)
        tokenizer_path = (cfg.model.reward_path or cfg.model.path) if self.role == "reward" else cfg.model.path
        self.tokenizer = load_tokenizer(tokenizer_path, cfg.model.trust_remote_code)
        if self.role == "policy" and cfg.algorithm.ptx_coef > 0:
            self.ptx_rows = ptx_examples(self.tokenizer, read_ptx_lines(cfg.data.ptx_path), cfg.data.ptx_max_tokens)
        if self.role == "policy" and reference_copy_in_policy(cfg):
            # Outside DeepSpeed: frozen, never partitioned, never saved; only the reference log-probs use it.
            self.reference_model = load_reference_model(cfg.model, self.device)
            if cfg.trainer.compile:
                compile_blocks(self.reference_model)

    @torch.no_grad()
    def forward(self, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int) -> torch.Tensor:
        """Policy: response log-probs [B, R]; critic: response values [B, R]."""
        module = self.model.module
        module.eval()
        if self.role == "policy":
            fn = lambda seq, attn, plen: policy_logprobs(module, seq, attn, plen)[0]  # noqa: E731
        else:
            fn = lambda seq, attn, plen: response_values(module, seq, attn, plen)  # noqa: E731
        return response_forward(fn, self.cfg.trainer.micro_batch_size, sequences.to(self.device),
                                attention_mask.to(self.device), prompt_len)

    @torch.no_grad()
    def forward_reference(self, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                          trim: bool = True) -> torch.Tensor:
        """Reference log-probs [B, R]: from this replica's copy of the reference (`ray.reference_in_policy`),
        else from the policy with its adapters disabled (the starting model)."""
        with self._frozen_reference() as module:
            return response_forward(lambda seq, attn, plen: policy_logprobs(module, seq, attn, plen)[0],
                                    self.cfg.trainer.micro_batch_size, sequences.to(self.device),
                                    attention_mask.to(self.device), prompt_len, trim)

    def release_reference(self) -> None:
        """Drop the reference copy once its log-probs are stored (DPO computes them all before training)."""
        self.reference_model = None

    def memory_report(self) -> dict:
        """Bytes of frozen and trainable weights: what folding the reference into the policy saves."""
        module = self.model.module
        return {"frozen_bytes": frozen_parameter_bytes(module), "trainable_bytes": adapter_parameter_bytes(module)}

    def train(self, mini_batches: list) -> TrainStats:
        """One optimizer step per element: this replica's share of one global mini-batch.

        Elements are the records of the mode's objective (Experience, SFTBatch, PreferenceBatch).
        """
        module = self.model.module
        module.train()
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        count = skipped = 0
        for mini_batch in mini_batches:
            micros = plan_micro_batches(mini_batch.to(self.device), self.cfg.trainer.micro_batch_size)
            step = self.model.engine.global_steps
            for index, micro in enumerate(micros):
                loss, metrics = self.objective(module, micro)
                if self.ptx_rows:
                    ptx_loss, ptx_metrics = self._pretrain_mix_loss(module, step, index, len(micros))
                    loss = loss + self.cfg.algorithm.ptx_coef * ptx_loss
                    metrics = {**metrics, **ptx_metrics}
                applied = self.model.backward_step(loss)
                skipped += applied is False
                for k, v in metrics.items():
                    totals[k] = totals.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
                count += 1
        # Per-key counts: a padding-only micro-batch reports no metrics and must not dilute the means.
        means = {k: v / counts[k] for k, v in totals.items()}
        # Same on every rank (the skip decision is all-reduced), so the merged mean is the count.
        means[f"{self.role}/skipped_optimizer_steps"] = float(skipped)
        return TrainStats(means, count)

    def _pretrain_mix_loss(self, module, step: int, local_index: int,
                           local_micros: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss on this micro-batch's pre-training rows (their next tokens, or the reference's predictions
        on them: `algorithm.ptx_target`) and its metric; which rows depends on the micro-batch's place in
        the global mini-batch, not on the replica count (rlhf.data.pretrain_mix)."""
        rows = ptx_indices(len(self.ptx_rows), self.cfg.trainer.seed, step,
                           self.rank * local_micros + local_index, self.world_size * local_micros,
                           self.cfg.trainer.micro_batch_size)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        batch = collate_sft([[self.ptx_rows[i]] for i in rows], pad).to(self.device)
        if mix_anchored_to_reference(self.cfg):
            return reference_kl_micro_batch_loss(module, self._frozen_reference, batch)
        loss, _ = sft_micro_batch_loss(module, batch)
        return loss, {"ptx/loss": float(loss.detach())}

    @contextlib.contextmanager
    def _frozen_reference(self):
        """The reference model, in eval mode (no dropout): this replica's copy (`ray.reference_in_policy`),
        else the policy with its adapters disabled (the starting model); the policy's mode is restored."""
        if self.reference_model is not None:
            self.reference_model.eval()
            yield self.reference_model
            return
        module = self.model.module
        if not is_peft(module):  # the config checks rule this out; never take the policy for its own reference
            raise RuntimeError("this policy process holds no reference model (no copy, no adapters to disable)")
        was_training = module.training
        module.eval()
        try:
            with adapters_disabled(module):
                yield module
        finally:
            module.train(was_training)

    @torch.no_grad()
    def evaluate(self, batch) -> TrainStats:
        """The objective's metrics on held-out rows, no update: means weighted by `batch.weight()` of each
        micro-batch (labelled tokens, real pairs); `count` is the total weight, for merging replicas."""
        module = self.model.module
        module.eval()
        totals: dict[str, float] = {}
        weight = 0
        batch = batch.to(self.device)
        for s in in_micro_batches(len(batch), self.cfg.trainer.micro_batch_size):
            micro = batch.select(s)
            _, metrics = self.objective(module, micro)
            w = micro.weight()
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + v * w
            weight += w
        return TrainStats({k: v / max(weight, 1) for k, v in totals.items()}, weight)

    def general_probe(self, text_rows: list, prompt_rows: list, max_new_tokens: int, pad_id: int) -> Optional[dict]:
        """General-text log-likelihood and greedy continuations of the general prompts (rlhf.evaluation.probe);
        every rank runs all rows (ZeRO-3 gathers stay in step), rank 0 answers."""
        result = run_probe(self.model.module, text_rows, prompt_rows, max_new_tokens, pad_id)
        return result if self.rank == 0 else None

    def weights_blob(self) -> Optional[bytes]:
        """Full weights as safetensors bytes on rank 0 (every rank must call: ZeRO-3 gathers)."""
        blob = self.model.full_state_bytes()
        return blob if self.rank == 0 else None

    def weight_sync_settings(self) -> "SyncSettings":
        """How the driver pushes this policy's weights (rollout.weight_sync and friends)."""
        return SyncSettings.from_config(self.cfg)

    def weight_manifest(self) -> list[tuple[str, list[int], str]]:
        """(name, shape, dtype) of every tensor an engine loads, in the order they are sent."""
        return [(s.name, list(s.shape), s.dtype) for s in manifest(weight_sources(self.model.module))]

    def join_weight_sync(self, host: str, port: int, world_size: int, backend: str, timeout_s: float,
                         shared_memory: bool = True) -> str:
        """Rank 0: host the weight-sync group (rlhf.rollout.sync_group) as its rank 0; replaces an older one.
        Returns the transport the group agreed on."""
        specs = manifest(weight_sources(self.model.module))
        device = self.device if backend == "nccl" else "cpu"
        self.weight_sync = None
        self.weight_sync = SyncGroup(host, port, 0, world_size, backend, timeout_s, specs,
                                     self.cfg.rollout.weight_sync_bucket_mb, device, shared_memory)
        return self.weight_sync.transport

    def broadcast_weights(self) -> int:
        """Every rank (ZeRO-3 gathers one bucket at a time); rank 0 broadcasts each bucket. Returns bytes sent."""
        sources = weight_sources(self.model.module)
        buckets = plan_spec_buckets(manifest(sources), self.cfg.rollout.weight_sync_bucket_mb)
        stream = self.model.gathered_buckets(sources, buckets)
        if self.rank == 0:
            if self.weight_sync is None:
                raise RuntimeError("broadcast_weights before join_weight_sync")
            try:
                return self.weight_sync.send(stream)
            except Exception:
                # The other replicas still gather bucket after bucket: take part to the end, then fail
                # (the driver falls back to the object store), so the trainers' group stays in step.
                for _ in stream:
                    pass
                raise
        for _ in stream:
            pass
        return 0

    def save_checkpoint(self, folder: str) -> None:
        self.model.save_checkpoint(folder)

    def load_checkpoint(self, folder: str) -> None:
        self.model.load_checkpoint(folder)

    def save_pretrained(self, folder: str) -> Optional[str]:
        return self.model.save_pretrained(folder, self.tokenizer, self.rank, self.cfg.model.lora.save_merged)
