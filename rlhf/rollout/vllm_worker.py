"""Runs inside vLLM's worker processes: in-place weight reload, from the weight-sync group or from bytes.

vLLM imports this class by name (`worker_extension_cls`) and mixes it into its worker, so
`self.model_runner`, `self.rank` (the tensor-parallel rank) and `self.device` are the worker's.
`model_runner.reload_weights` redoes the CPU weight re-packing that a plain `model.load_weights` would
skip, and it must see the whole state dict in one call (it finishes each layer once all its weights
arrived), so the collective path hands it an iterator that receives bucket after bucket.
The object-store path: tensors passed through `collective_rpc` arrive as nested lists, so the state
dict travels as one safetensors blob (STACK.md: 21 tensors, 64 ms).
"""
from __future__ import annotations

from safetensors.torch import load as load_safetensors

from rlhf.rollout.sync_group import SyncGroup, TensorSpec


class WeightSyncExtension:
    def load_weights_from_bytes(self, blob: bytes) -> int:
        state = load_safetensors(blob)
        self.model_runner.reload_weights(weights_iterator=iter(state.items()))
        return len(state)

    def join_weight_sync(self, host: str, port: int, world_size: int, first_rank: int, manifest: list,
                         bucket_mb: int, timeout_s: float, backend: str) -> int:
        """Join the policy's weight-sync group as rank `first_rank` + this worker's tensor-parallel rank."""
        rank = first_rank + getattr(self, "rank", 0)
        specs = [TensorSpec(name, tuple(shape), dtype) for name, shape, dtype in manifest]
        self.weight_sync = None
        self.weight_sync = SyncGroup(host, port, rank, world_size, backend, timeout_s, specs, bucket_mb,
                                     self.device if backend == "nccl" else "cpu")
        return rank

    def receive_weights(self) -> int:
        """Receive one push and load it in place; returns the tensors received."""
        received = 0

        def counted():
            nonlocal received
            for item in self.weight_sync.receive():
                received += 1
                yield item

        stream = counted()
        self.model_runner.reload_weights(weights_iterator=stream)
        # Whatever the loader did not ask for must still be received, or the next push would be misaligned.
        for _ in stream:
            pass
        return received
