"""A model inside a DeepSpeed ZeRO engine: optimizer steps, full-weight gathering, checkpoints."""
from __future__ import annotations

import functools
import json
import os
from contextlib import nullcontext
from typing import Callable, Iterator, Optional

import torch
from safetensors.torch import save as save_safetensors
from safetensors.torch import save_file

from rlhf.faults import all_finite
from rlhf.models.adapters import is_peft, merged_state_dict
from rlhf.models.weight_sources import WeightSource



def deepspeed_config(
    zero_stage: int,
    micro_batch_size: int,
    grad_accum_steps: int,
    world_size: int,
    learning_rate: float,
    weight_decay: float,
    max_grad_norm: float,
    dtype: str,
    on_gpu: bool = False,
    offload_optimizer: bool = False,
    offload_params: bool = False,
) -> dict:
    zero = {"stage": zero_stage}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum_steps,
        "train_batch_size": micro_batch_size * grad_accum_steps * world_size,
        "gradient_clipping": max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": dtype == "float16"},
        "optimizer": {
            "type": "AdamW",
            # torch's AdamW does the same math as the fused kernel, which needs CUDA (and, unless
            # prebuilt, nvcc at run time); with offloaded states DeepSpeed uses its CPU Adam.
            "params": {"lr": learning_rate, "weight_decay": weight_decay,
                       "torch_adam": not (on_gpu and not offload_optimizer and fused_adam_builds())},
        },
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def fused_adam_builds() -> bool:
    """Whether DeepSpeed's fused CUDA Adam is prebuilt, or can be compiled here (CUDA and nvcc present)."""
    import shutil

    if not torch.cuda.is_available():
        return False
    try:
        from deepspeed.git_version_info import installed_ops
        from deepspeed.ops.op_builder import FusedAdamBuilder

        prebuilt = bool(installed_ops.get("fused_adam"))
        return prebuilt or (shutil.which("nvcc") is not None and FusedAdamBuilder().is_compatible(verbose=False))
    except Exception:  # an op builder this DeepSpeed lacks, or a broken CUDA toolkit: torch's AdamW
        return False


def zero3_init_config(ds_config: dict):
    """While the returned object lives, `from_pretrained` builds ZeRO-3 models partitioned (zero.Init):
    no rank ever holds the whole model, so one larger than a host's memory can be trained."""
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(ds_config)


def zero3_gathered(params: list, partitioned: bool):
    """A context in which `params` are whole and writable (rank 0's edit is kept), when built partitioned."""
    if not partitioned:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=0)


def enable_gradient_checkpointing(module: torch.nn.Module) -> None:
    """Recompute activations in backward; inputs keep requiring grad so frozen embeddings (PEFT) still work."""
    module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(module, "enable_input_require_grads"):
        module.enable_input_require_grads()


def compile_on_first_call() -> Callable[[Callable], Callable]:
    """A `torch.compile` decorator that builds the compiled function when it is first called.

    `torch.compile(fn)` loads `torch._inductor` as soon as it wraps `fn`, before any call.
    """
    def decorate(fn: Callable) -> Callable:
        compiled: Optional[Callable] = None

        @functools.wraps(fn)
        def call(*args, **kwargs):
            nonlocal compiled
            if compiled is None:
                compiled = torch.compile(fn)
            return compiled(*args, **kwargs)

        return call

    return decorate


def defer_deepspeed_compiles() -> None:
    """DeepSpeed's kernels decorated with its `compiler.compile()` are compiled on first use, not at import.

    ZeRO's optimizer check and the ZeRO-1/2 gradient reduction import DeepSpeed's Muon optimizer only for an
    `isinstance` test, and that module's decorators load `torch._inductor`: 0.9 s of CPU in every trainer
    process at start-up (bench/README.md, "Start-up"), for an optimizer our configs never name. A Muon run
    still compiles the same functions, at their first call. Call before DeepSpeed imports that module.
    """
    from deepspeed.runtime import compiler

    compiler.compile = compile_on_first_call


class DeepSpeedModel:
    """Owns the engine; callers compute losses on `self.module` and call `backward_step`."""

    def __init__(self, model: torch.nn.Module, ds_config: dict) -> None:
        import deepspeed

        self.zero_stage = ds_config["zero_optimization"]["stage"]
        defer_deepspeed_compiles()
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=ds_config
        )
        # Weights as safetensors, everything read back without pickle code execution.
        from rlhf.training.safe_checkpoint import SafeCheckpointEngine  # imports DeepSpeed: actors only

        self.engine.checkpoint_engine = SafeCheckpointEngine()

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    def backward_step(self, loss: torch.Tensor) -> Optional[bool]:
        """Backward, then step; DeepSpeed applies the optimizer only at accumulation boundaries.

        Returns None between boundaries, True when the optimizer step was applied and False when
        it was skipped because a gradient was NaN/inf on some rank (the weights are unchanged).
        ZeRO 1-3 detect that themselves (global grad norm, all-reduced over ranks); without ZeRO
        we check the gradients (all-reduced flag) and close the window without an update.
        """
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.backward(loss)
        if boundary and self.zero_stage == 0 and not self._grads_finite_on_all_ranks():
            self._step_without_update()
            return False
        self.engine.step()
        return bool(getattr(self.engine, "_step_applied", True)) if boundary else None

    def _step_without_update(self) -> None:
        """Close the accumulation window (DeepSpeed's counters, zeroed grads) with no optimizer update."""
        for param in self.engine.module.parameters():
            if param.grad is not None:
                param.grad.zero_()
        optimizer = self.engine.optimizer
        own = vars(optimizer).get("step")
        optimizer.step = lambda *args, **kwargs: None
        try:
            self.engine.step()
        finally:
            if own is None:
                del optimizer.step
            else:
                optimizer.step = own
        self.engine.skipped_steps += 1

    def _grads_finite_on_all_ranks(self) -> bool:
        import torch.distributed as dist

        grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
        # On the model's device: NCCL all-reduces only device tensors.
        device = grads[0].device if grads else next(self.engine.module.parameters()).device
        bad = torch.tensor([0.0 if all_finite(grads) else 1.0], device=device)
        if dist.is_initialized():
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        return bad.item() == 0.0

    def _gathered(self):
        """Under ZeRO-3, a context in which every parameter is whole on every rank."""
        if self.zero_stage != 3:
            return nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(self.engine.module.parameters()), modifier_rank=None)

    def gathered_buckets(self, sources: list[WeightSource], buckets: list[list[int]]) -> Iterator[list[torch.Tensor]]:
        """Each bucket's full tensors in turn; under ZeRO-3 only that bucket's parameters are gathered
        (every rank must iterate, in step). The tensors are valid until the next bucket is asked for."""
        import deepspeed

        for index in buckets:
            picked = [sources[i] for i in index]
            params = list({id(p): p for s in picked for p in s.params}.values())
            gathered = (deepspeed.zero.GatheredParameters(params, modifier_rank=None) if self.zero_stage == 3
                        else nullcontext())
            with torch.no_grad(), gathered:
                yield [s.compute() for s in picked]

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a plain Hugging Face model would have: gathered from ZeRO-3 shards, LoRA
        adapters merged in. All ranks must call it together."""
        module = self.engine.module
        with self._gathered():
            if is_peft(module):
                return merged_state_dict(module)
            return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}

    def full_state_bytes(self) -> bytes:
        """The full weights as safetensors bytes: what rollout engines load."""
        return save_safetensors(unique_tensors(self.full_state_dict()))

    @property
    def has_frozen_weights(self) -> bool:
        """LoRA: the frozen base is rebuilt from `model.path` on resume, so checkpoints leave it out."""
        return any(not p.requires_grad for p in self.engine.module.parameters())

    def save_checkpoint(self, folder: str) -> None:
        """Model and optimizer state of this rank (all ranks call it)."""
        self.engine.save_checkpoint(folder, tag="engine", save_latest=False,
                                    exclude_frozen_parameters=self.has_frozen_weights)

    def load_checkpoint(self, folder: str) -> None:
        path, _ = self.engine.load_checkpoint(folder, tag="engine", load_optimizer_states=True,
                                              load_lr_scheduler_states=False,
                                              load_module_strict=not self.has_frozen_weights)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {folder}/engine")

    def save_pretrained(self, folder: str, tokenizer=None, rank: int = 0, save_merged: bool = False) -> Optional[str]:
        """The model in Hugging Face format; with LoRA the adapters in PEFT format, and on request
        the merged model under `folder/merged`. Rank 0 writes; under ZeRO-3 every rank must call."""
        module = self.engine.module
        with self._gathered():
            full = {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}
            merged = merged_state_dict(module) if is_peft(module) and save_merged else None
        if rank != 0:
            return None
        os.makedirs(folder, exist_ok=True)
        module.save_pretrained(folder, state_dict=full)
        if merged is not None:
            save_plain_model(module.get_base_model().config, merged, os.path.join(folder, "merged"), tokenizer)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        return folder


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied embeddings): keep one name per storage."""
    seen, unique = set(), {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            continue
        seen.add(key)
        unique[name] = tensor.contiguous()
    return unique


def save_plain_model(config, state: dict[str, torch.Tensor], folder: str, tokenizer=None) -> None:
    """A Hugging Face model folder from a state dict; a quantized base's config loses its quantization."""
    os.makedirs(folder, exist_ok=True)
    plain = config.to_dict()
    plain.pop("quantization_config", None)
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(plain, fh, indent=2)
    save_file(unique_tensors(state), os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
