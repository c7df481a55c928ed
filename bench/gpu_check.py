"""The device path of every actor class on one GPU, in one process, without Ray (bench/gpu_check.sh).

    python -m bench.gpu_check [--device cuda|cpu] [--assets .assets/tiny] [--dtype bfloat16]

Drives the actor classes as plain objects (actors.common.actor: the GPU image has no Ray): the built-in
engine generates; reference and reward-model forwards; policy training steps under ZeRO-2 and ZeRO-3,
with LoRA and (with bitsandbytes) QLoRA; after each a collective weight push into the engine, then the
engine/policy log-prob gap on fresh samples; the general probe; a critic step; a DPO step. It asserts
where every model and every returned tensor lives, and prints step times, push GB/s and peak GPU
memory. `--device cpu` runs the same checks on CPU (float32): tests/integration/test_bench_smoke.py
runs it that way, so the script keeps working between the sessions that have a GPU.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time

import torch

from actors import frozen, rollout, trainer
from actors import reward as reward_actor
from actors.common import plain_class
from rlhf.config import load
from rlhf.data.batching import collate_preferences
from rlhf.data.examples import load_preference_examples
from rlhf.data.prompts import load_prompts
from rlhf.evaluation.probe import GeneralProbe
from rlhf.masked import masked_mean, masked_sum
from rlhf.models.loading import load_tokenizer
from rlhf.records import Experience
from rlhf.rollout import SamplingSpec
from rlhf.rollout.batch import collate_rollout
from rlhf.training.devices import tensor_devices
from rlhf.training.distributed import free_port

ReferenceActor, RewardActor = plain_class(frozen.ReferenceActor), plain_class(reward_actor.RewardActor)
RolloutActor, TrainingActor = plain_class(rollout.RolloutActor), plain_class(trainer.TrainingActor)
CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "ppo_tiny.yaml")
DPO_CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "dpo_tiny.yaml")
ROWS = 16


def both(*calls):
    """Run the calls at once (the two ends of one collective), re-raising the first failure."""
    results, errors = [None] * len(calls), []

    def run(i, fn):
        try:
            results[i] = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def on_cpu(name: str, value) -> None:
    devices = tensor_devices(value)
    assert devices <= {"cpu"}, f"{name} returned tensors on {devices}"


class Check:
    def __init__(self, args) -> None:
        self.device = args.device
        self.gap_limit = 1e-3 if args.dtype == "bfloat16" else 1e-4
        assets = os.path.abspath(args.assets)
        gpus = "1" if args.device == "cuda" else "0"
        self.assets = assets
        self.overrides = [
            f"model.path={assets}/policy", f"model.reward_path={assets}/reward", f"model.dtype={args.dtype}",
            f"data.train_path={assets}/data/task_train.jsonl", "rollout.engine=builtin", "reward.source=model",
            f"eval.general_text_path={assets}/data/general_eval.txt",
            f"eval.general_prompts_path={assets}/data/general_prompts.jsonl",
            "trainer.mini_batch_size=16", "trainer.micro_batch_size=8", "ray.policy.replicas=1",
            "logging.progress=false", *(f"ray.{g}.num_gpus={gpus}" for g in ("policy", "reference", "reward", "rollout")),
        ]
        self.cfg = load(CONFIG, self.overrides)
        self.tokenizer = load_tokenizer(self.cfg.model.path)
        prompts, _ = load_prompts(self.cfg.data.train_path, self.tokenizer, self.cfg.data)
        self.prompts = prompts[:ROWS // 4]

    def expect_device(self, name: str, actor, module) -> None:
        want = "cuda" if self.device == "cuda" else "cpu"
        got = next(module.parameters()).device.type
        assert actor.device.type == want and got == want, f"{name}: actor {actor.device}, weights on {got}"
        print(f"ok  {name}: weights on {got}")

    def rollout(self, engine, seed: int):
        ids = [p.token_ids for p in self.prompts]
        gens = engine.generate(ids, SamplingSpec(n=4, max_new_tokens=12, seed=seed))
        on_cpu("engine.generate", gens)
        return collate_rollout(ids, [p.text for p in self.prompts], [p.row for p in self.prompts], gens,
                               self.tokenizer, policy_version=seed)

    def run(self) -> None:
        engine = RolloutActor(self.cfg, 0, "builtin")
        self.expect_device("rollout engine (built-in)", engine, engine.engine.model)
        batch = self.rollout(engine, 0)
        reference = ReferenceActor(self.cfg)
        self.expect_device("reference", reference, reference.model)
        ref = reference.forward(batch.sequences, batch.attention_mask, batch.prompt_len)
        on_cpu("reference.forward", ref)
        reward = RewardActor(self.cfg)
        self.expect_device("reward model", reward, reward.source.model)
        on_cpu("reward.score", reward.score(batch.prompts, batch.responses, batch.sequences, batch.attention_mask))
        variants = [("ZeRO-2", ["trainer.zero_stage=2"]), ("ZeRO-3", ["trainer.zero_stage=3"]),
                    ("LoRA", ["trainer.zero_stage=2", "model.lora.rank=8"])]
        try:
            import bitsandbytes  # noqa: F401

            if self.device == "cuda":
                variants.append(("QLoRA", ["trainer.zero_stage=2", "model.lora.rank=8", "model.quantization=nf4"]))
        except ImportError:
            print("--  QLoRA skipped: bitsandbytes is not installed")
        for step, (name, extra) in enumerate(variants, start=1):
            self.train_and_push(name, load(CONFIG, self.overrides + extra), engine, step)
        self.critic_step(batch)
        self.dpo_step(reference)
        if self.device == "cuda":
            print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")

    def train_and_push(self, name: str, cfg, engine, version: int) -> None:
        policy = TrainingActor("policy", cfg, 0, 1)
        policy.setup("127.0.0.1", free_port())
        self.expect_device(f"policy {name}", policy, policy.model.module)
        batch = self.rollout(engine, version)
        old = policy.forward(batch.sequences, batch.attention_mask, batch.prompt_len)
        on_cpu("policy.forward", old)
        advantages = (torch.arange(len(batch), dtype=torch.float32) % 3 - 1).unsqueeze(1) * batch.response_mask
        experience = Experience(batch.sequences, batch.attention_mask, batch.response_mask, old, advantages,
                                torch.zeros_like(advantages), None, batch.prompt_len)
        step_s, _ = self.train_three(policy, [experience])
        host, port = "127.0.0.1", free_port()
        manifest = policy.weight_manifest()
        both(lambda: policy.join_weight_sync(host, port, 2, "gloo", 300),
             lambda: engine.join_weight_sync(host, port, 2, 1, manifest, cfg.rollout.weight_sync_bucket_mb, 300, "gloo"))
        started = time.perf_counter()
        sent, _ = both(policy.broadcast_weights, lambda: engine.receive_weights(version))
        push_s = time.perf_counter() - started
        fresh = self.rollout(engine, 100 + version)
        now = policy.forward(fresh.sequences, fresh.attention_mask, fresh.prompt_len)
        gap = float(masked_mean((now - fresh.rollout_logprobs).abs(), fresh.response_mask))
        assert gap < self.gap_limit, f"{name}: engine/policy log-prob gap {gap:.2e} after the push"
        probe = GeneralProbe.from_config(cfg.eval, self.tokenizer)
        result = policy.general_probe(*probe.actor_args())
        on_cpu("policy.general_probe", result)
        print(f"ok  {name}: step {step_s:.3f}s (median of 3), push {sent / 2**20:.1f} MB in {push_s:.3f}s "
              f"({sent / 2**30 / push_s:.2f} GB/s, gloo), log-prob gap {gap:.2e}, probe nll/token "
              f"{result['nll'] / max(result['tokens'], 1):.3f}")

    def train_three(self, trained, records: list) -> tuple[float, dict]:
        """Median seconds of three optimizer steps on `records`, and the first step's metrics (every
        returned value must be on the CPU)."""
        times, first = [], None
        for _ in range(3):
            started = time.perf_counter()
            stats = trained.train(records)
            times.append(time.perf_counter() - started)
            on_cpu(f"{trained.role}.train", stats)
            first = first or stats.values
        return sorted(times)[1], first

    def critic_step(self, batch) -> None:
        critic = TrainingActor("critic", load(CONFIG, self.overrides + ["trainer.zero_stage=2"]), 0, 1)
        critic.setup("127.0.0.1", free_port())
        self.expect_device("critic ZeRO-2", critic, critic.model.module)
        values = critic.forward(batch.sequences, batch.attention_mask, batch.prompt_len)
        on_cpu("critic.forward", values)
        returns = torch.ones_like(values) * batch.response_mask
        experience = Experience(batch.sequences, batch.attention_mask, batch.response_mask, torch.zeros_like(values),
                                torch.zeros_like(values), returns, values, batch.prompt_len)
        step_s, _ = self.train_three(critic, [experience])
        after = critic.forward(batch.sequences, batch.attention_mask, batch.prompt_len)
        moved = float(masked_mean((after - values).abs(), batch.response_mask))
        assert 0 < moved < float("inf"), f"critic: values moved by {moved} in three steps"
        print(f"ok  critic: step {step_s:.3f}s (median of 3), values moved by {moved:.3f}")

    def dpo_step(self, reference) -> None:
        cfg = load(DPO_CONFIG, [
            f"model.path={self.assets}/policy", f"model.dtype={self.cfg.model.dtype}",
            f"data.train_path={self.assets}/data/prefs_train.jsonl", "data.eval_path=null",
            "trainer.mini_batch_size=8", "trainer.micro_batch_size=8", "ray.policy.replicas=1",
            "ray.reference_in_policy=false", f"ray.policy.num_gpus={self.cfg.ray.policy.num_gpus}",
            "logging.progress=false"])
        policy = TrainingActor("policy", cfg, 0, 1)
        policy.setup("127.0.0.1", free_port())
        self.expect_device("policy DPO", policy, policy.model.module)
        pairs, _ = load_preference_examples(cfg.data.train_path, self.tokenizer, cfg.data)
        probe = collate_preferences(pairs[:8], self.tokenizer.pad_token_id)
        sequences = torch.cat([probe.chosen, probe.rejected])
        attention = torch.cat([probe.chosen_attention_mask, probe.rejected_attention_mask])
        ref = reference.forward(sequences, attention, probe.prompt_len, False)  # untrimmed, as the DPO mode asks
        on_cpu("reference.forward", ref)
        logps = masked_sum(ref, torch.cat([probe.chosen_response_mask, probe.rejected_response_mask]), dim=-1)
        batch = collate_preferences(pairs[:8], self.tokenizer.pad_token_id, logps[:8], logps[8:])
        step_s, first = self.train_three(policy, [batch])
        # Before its first update the policy is the reference, so every pair's loss is log 2: the reference's
        # log-probs (its own actor, this device) and the policy's agree.
        assert abs(first["dpo/loss"] - math.log(2)) < 10 * self.gap_limit, f"DPO: first loss {first['dpo/loss']}"
        print(f"ok  DPO: step {step_s:.3f}s (median of 3), first loss {first['dpo/loss']:.5f} (log 2 = 0.69315)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--assets", default=".assets/tiny")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    args = parser.parse_args()
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no GPU: skipped")
        return 0
    if not os.path.exists(os.path.join(args.assets, "assets.json")):
        from rlhf.assets.build import build_assets

        build_assets(args.assets)
    started = time.perf_counter()
    Check(args).run()
    print(f"gpu check passed in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
