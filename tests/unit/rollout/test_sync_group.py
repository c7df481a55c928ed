"""The weight-sync group's pure parts (bucket plan, byte layout) and a real two-rank gloo push."""
from __future__ import annotations

import threading

import pytest
import torch

from rlhf.rollout.sync_group import ALIGN_BYTES, SyncGroup, TensorSpec, aligned, pack, plan_buckets, unpack
from rlhf.training.distributed import free_port


def test_plan_buckets_over_4_gib_of_sizes():
    # A 7B-like layout, sizes only (nothing allocated): 32 layers of 4 x 32 MiB + 3 x 86 MiB tensors
    # (bf16 q/k/v/o and MLP), plus a 500 MiB embedding and a 600 MiB head larger than the limit.
    mib = 1 << 20
    sizes = [500 * mib] + [s * mib for _ in range(32) for s in (32, 32, 32, 32, 86, 86, 86)] + [600 * mib]
    assert sum(sizes) > 4 * (1 << 30)
    limit = 512 * mib
    buckets = plan_buckets(sizes, limit)
    flat = [i for b in buckets for i in b]
    assert flat == list(range(len(sizes)))  # every tensor exactly once, in order
    for bucket in buckets:
        total = sum(sizes[i] for i in bucket)
        assert total <= limit or len(bucket) == 1, (bucket, total)
    assert [sizes[i] for i in buckets[-1]] == [600 * mib]  # too big for any bucket: alone
    # Greedy: a bucket closes only when the next tensor would not fit.
    for a, b in zip(buckets, buckets[1:]):
        assert sum(sizes[i] for i in a) + sizes[b[0]] > limit


def test_plan_buckets_worked_example():
    # limit 10: [4, 4] (next 4 would make 12), [4, 6] (=10), [11] alone, [1]
    assert plan_buckets([4, 4, 4, 6, 11, 1], 10) == [[0, 1], [2, 3], [4], [5]]
    assert plan_buckets([], 10) == []


def test_pack_unpack_round_trip_keeps_dtypes_and_alignment():
    tensors = [torch.arange(3, dtype=torch.float32), torch.ones(2, 5, dtype=torch.bfloat16),
               torch.tensor([7], dtype=torch.int64)]
    specs = [TensorSpec(f"t{i}", tuple(t.shape), str(t.dtype).removeprefix("torch.")) for i, t in enumerate(tensors)]
    buffer = pack(tensors, "cpu")
    assert buffer.numel() == sum(aligned(s.nbytes) for s in specs) and buffer.numel() % ALIGN_BYTES == 0
    for (name, got), want, spec in zip(unpack(buffer, specs), tensors, specs):
        assert name == spec.name and got.dtype == want.dtype and torch.equal(got, want)


def test_two_ranks_push_buckets_over_gloo():
    # Rank 0 sends three tensors in buckets of 1 MB (b, 1.25 MB, is over the limit: a bucket alone);
    # rank 1 receives.
    weights = {"a": torch.randn(64, 64), "b": torch.randn(512, 640), "c": torch.randn(10)}
    specs = [TensorSpec(k, tuple(v.shape), "float32") for k, v in weights.items()]
    port = free_port()
    received: dict = {}

    def receiver():
        group = SyncGroup("127.0.0.1", port, 1, 2, "gloo", 30, specs, 1, "cpu")
        received.update({name: t.clone() for name, t in group.receive()})

    thread = threading.Thread(target=receiver)
    thread.start()
    sender = SyncGroup("127.0.0.1", port, 0, 2, "gloo", 30, specs, 1, "cpu")
    assert sender.buckets == [[0], [1], [2]]
    sent = sender.send([[weights[specs[i].name] for i in b] for b in sender.buckets])
    thread.join(timeout=30)
    assert sent >= sum(s.nbytes for s in specs)
    assert set(received) == set(weights)
    for name, tensor in weights.items():
        assert torch.equal(received[name], tensor)


def test_vllm_cpu_thread_binding_splits_the_allowed_cores():
    from rlhf.rollout.vllm_engine import cpu_thread_binding

    assert cpu_thread_binding([0, 1], 2) == "0|1"
    assert cpu_thread_binding([2, 3, 4, 5, 6], 2) == "2,3|4,5"  # 5 cores, 2 ranks: 2 each, one left over
    with pytest.raises(ValueError, match="needs as many cores"):
        cpu_thread_binding([0], 2)
