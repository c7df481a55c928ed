"""The weight-sync group's pure parts (bucket plan, byte layout) and a real two-rank gloo push."""
from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from rlhf.rollout.sync_group import ALIGN_BYTES, SyncGroup, TensorSpec, aligned, plan_buckets, unpack
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


def test_unpack_views_each_tensor_at_an_aligned_offset_with_its_dtype():
    specs = [TensorSpec("a", (3,), "float32"), TensorSpec("b", (2, 5), "bfloat16"), TensorSpec("c", (1,), "int64")]
    buffer = torch.zeros(sum(aligned(s.nbytes) for s in specs), dtype=torch.uint8)
    views = unpack(buffer, specs)
    assert [(name, t.dtype, tuple(t.shape)) for name, t in views] == [
        ("a", torch.float32, (3,)), ("b", torch.bfloat16, (2, 5)), ("c", torch.int64, (1,))]
    assert [t.data_ptr() - buffer.data_ptr() for _, t in views] == [0, ALIGN_BYTES, 2 * ALIGN_BYTES]
    views[1][1].fill_(1.5)  # views, not copies
    assert torch.equal(unpack(buffer, specs)[1][1], torch.full((2, 5), 1.5, dtype=torch.bfloat16))


@pytest.mark.parametrize("shared_memory", [True, False], ids=["shared_memory", "gloo"])
def test_two_ranks_push_buckets(shared_memory):
    # Rank 0 sends four tensors in buckets of 1 MB (b, 1.25 MB, is over the limit: a bucket alone);
    # rank 1 receives. One is sent transposed (not contiguous): it travels as its contiguous copy.
    weights = {"a": torch.randn(64, 64), "b": torch.randn(512, 640), "c": torch.randn(10),
               "d": torch.randn(6, 4).to(torch.bfloat16)}
    specs = [TensorSpec(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in weights.items()]
    port = free_port()
    received: dict = {}

    def receiver():
        group = SyncGroup("127.0.0.1", port, 1, 2, "gloo", 30, specs, 1, "cpu")  # follows rank 0's choice
        received.update({name: t.clone() for name, t in group.receive()})

    thread = threading.Thread(target=receiver)
    thread.start()
    sender = SyncGroup("127.0.0.1", port, 0, 2, "gloo", 30, specs, 1, "cpu", shared_memory)
    assert sender.transport == ("shared_memory" if shared_memory else "gloo")
    assert sender.buckets == [[0], [1], [2, 3]]
    weights["a"] = weights["a"].t()
    sent = sender.send([[weights[specs[i].name] for i in b] for b in sender.buckets])
    thread.join(timeout=30)
    assert sent == sum(s.nbytes for s in specs)
    assert set(received) == set(weights)
    for name, tensor in weights.items():
        assert torch.equal(received[name], tensor)


def test_vllm_cpu_thread_binding_splits_the_allowed_cores():
    from rlhf.rollout.vllm_engine import cpu_thread_binding

    assert cpu_thread_binding([0, 1], 2) == "0|1"
    assert cpu_thread_binding([2, 3, 4, 5, 6], 2) == "2,3|4,5"  # 5 cores, 2 ranks: 2 each, one left over
    with pytest.raises(ValueError, match="needs as many cores"):
        cpu_thread_binding([0], 2)


def test_a_member_that_cannot_map_the_shared_files_sends_everyone_back_to_gloo(monkeypatch):
    # A receiver in another container sees no /dev/shm files of rank 0: the whole group falls back,
    # the push still arrives, and rank 0's files are gone from /dev/shm either way.
    from rlhf.rollout import shared_buckets

    monkeypatch.setattr(shared_buckets, "open_buckets", lambda token, sizes: None)
    created = []
    real_create = shared_buckets.create_buckets
    monkeypatch.setattr(shared_buckets, "create_buckets",
                        lambda token, sizes: created.append(token) or real_create(token, sizes))
    specs = [TensorSpec("a", (8, 8), "float32")]
    weights = torch.randn(8, 8)
    port = free_port()
    groups: dict = {}

    def receiver():
        groups[1] = SyncGroup("127.0.0.1", port, 1, 2, "gloo", 30, specs, 1, "cpu")
        groups["got"] = [t.clone() for _, t in groups[1].receive()]

    thread = threading.Thread(target=receiver)
    thread.start()
    sender = SyncGroup("127.0.0.1", port, 0, 2, "gloo", 30, specs, 1, "cpu")
    sender.send([[weights]])
    thread.join(timeout=30)
    assert created and sender.transport == groups[1].transport == "gloo"
    assert torch.equal(groups["got"][0], weights)
    assert not os.path.exists(shared_buckets.bucket_file(created[0], 0))


def test_shared_memory_files_are_unlinked_once_mapped_and_a_push_waits_for_the_last_to_be_read(monkeypatch):
    from rlhf.rollout import shared_buckets, sync_group

    monkeypatch.setattr(sync_group, "SIGNAL_BYTES", ALIGN_BYTES)  # a signal per tensor: two per push

    specs = [TensorSpec("a", (16,), "float32"), TensorSpec("b", (4,), "bfloat16")]
    port = free_port()
    pushes = [[torch.randn(16), torch.randn(4).to(torch.bfloat16)] for _ in range(3)]
    received: list = []
    before = set(os.listdir(shared_buckets.SHARED_DIR))

    def receiver():
        group = SyncGroup("127.0.0.1", port, 1, 2, "gloo", 30, specs, 1, "cpu")
        for _ in pushes:
            got = []
            for _, tensor in group.receive():
                time.sleep(0.05)  # a slow loader: rank 0 must not write the next push over this one
                got.append(tensor.clone())
            received.append(got)

    thread = threading.Thread(target=receiver)
    thread.start()
    sender = SyncGroup("127.0.0.1", port, 0, 2, "gloo", 30, specs, 1, "cpu")
    assert sender.transport == "shared_memory"
    assert not set(os.listdir(shared_buckets.SHARED_DIR)) - before  # mapped, then unlinked
    for tensors in pushes:
        sender.send([tensors])
    thread.join(timeout=30)
    for got, want in zip(received, pushes, strict=True):
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_a_cpu_receiver_keeps_its_bucket_buffers_from_push_to_push():
    # Two pushes of different weights: the second lands where the first did (no fresh pages) and is
    # received whole; within a push each bucket has its own buffer (vLLM keeps views until a layer ends).
    specs = [TensorSpec("a", (400, 400), "float32"), TensorSpec("b", (400, 400), "float32")]
    port = free_port()
    pushes = [[torch.randn(400, 400), torch.randn(400, 400)] for _ in range(2)]
    received: list = []

    def receiver():
        group = SyncGroup("127.0.0.1", port, 1, 2, "gloo", 30, specs, 1, "cpu")
        for _ in pushes:
            received.append([(t.clone(), t.data_ptr()) for _, t in group.receive()])

    thread = threading.Thread(target=receiver)
    thread.start()
    sender = SyncGroup("127.0.0.1", port, 0, 2, "gloo", 30, specs, 1, "cpu", shared_memory=False)
    assert sender.buckets == [[0], [1]]
    for tensors in pushes:
        sender.send([[tensors[0]], [tensors[1]]])
    thread.join(timeout=30)
    for got, want in zip(received, pushes):
        assert all(torch.equal(tensor, w) for (tensor, _), w in zip(got, want))
    first, second = ([ptr for _, ptr in push] for push in received)
    assert first == second and first[0] != first[1]


@pytest.mark.parametrize("colocate, backend", [(False, "nccl"), (True, "gloo")])
def test_gpu_pushes_use_nccl_unless_colocated_where_one_gpu_holds_two_members(colocate, backend):
    from rlhf.config import load
    from rlhf.rollout.sync_group import SyncSettings

    config = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs", "ppo_tiny.yaml")
    cfg = load(config, ["ray.policy.num_gpus=0.5", "ray.rollout.num_gpus=0.5", f"ray.colocate={str(colocate).lower()}"])
    assert SyncSettings.from_config(cfg).backend == backend
    assert SyncSettings.from_config(load(config, [])).backend == "gloo"  # CPU
