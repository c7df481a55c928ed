"""IA3, prompt tuning and prefix tuning in the real SFT and DPO modes (Ray, DeepSpeed ZeRO-2, tiny
models), and IA3 in PPO through merged-weight pushes.

Each run must learn on its held-out split, and the adapter it saves under final/ must load back with
`PeftModel.from_pretrained` and reproduce the trained model: the held-out metric recomputed from the
loaded adapter equals the one the run logged after its last step.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
from peft import PeftModel

from rlhf.algorithms.preference_losses import dpo_micro_batch_loss, summed_response_logprobs
from rlhf.algorithms.sft_losses import sft_micro_batch_loss
from rlhf.data.batching import collate_preferences, collate_sft, pack_examples
from rlhf.data.examples import load_preference_examples, load_sft_examples
from rlhf.metrics import read_metrics
from rlhf.models.adapters import adapters_disabled
from rlhf.models.loading import load_causal_lm, load_tokenizer
from rlhf.train import run_training

from test_modes import mode_config  # noqa: E402

pytestmark = pytest.mark.slow

# Learned scales and virtual tokens need a much larger step than full fine-tuning.
METHOD_SETTINGS = {
    "ia3": ["model.peft.type=ia3", "trainer.learning_rate=0.3"],
    "prompt_tuning": ["model.peft.type=prompt_tuning", "model.peft.num_virtual_tokens=8", "trainer.learning_rate=0.3"],
    "prefix_tuning": ["model.peft.type=prefix_tuning", "model.peft.num_virtual_tokens=8", "trainer.learning_rate=0.3"],
}
ONE_REPLICA = ["ray.policy.replicas=1"]


def _loaded_adapter(tiny_assets, final: str) -> torch.nn.Module:
    assert os.path.isfile(os.path.join(final, "adapter_config.json")), os.listdir(final)
    return PeftModel.from_pretrained(load_causal_lm(str(tiny_assets.policy)), final).eval()


def _trainable_fraction(tiny_assets, model) -> float:
    base = sum(p.numel() for p in load_causal_lm(str(tiny_assets.policy)).parameters())
    return sum(p.numel() for n, p in model.named_parameters() if "ia3_l" in n or "prompt_encoder" in n) / base


@pytest.mark.parametrize("method, replicas", [("ia3", 1), ("prompt_tuning", 2), ("prefix_tuning", 1)])
def test_sft_trains_with_the_method_and_its_adapter_loads_back(tiny_assets, ray_session, tmp_path, method, replicas):
    # Packed rows (sft_tiny.yaml); prompt tuning on two ZeRO-2 data-parallel replicas.
    cfg = mode_config("sft", tiny_assets, tmp_path, "data.train_path=DATA/sft_train.jsonl",
                      "data.eval_path=DATA/sft_eval.jsonl", "trainer.steps=20", "eval.every_steps=0",
                      f"ray.policy.replicas={replicas}", *METHOD_SETTINGS[method])
    summary = run_training(cfg)
    rows = read_metrics(str(tmp_path))
    start, end = rows[0]["eval/sft/loss"], rows[-1]["eval/sft/loss"]
    # The tiny base is random: scales or a few virtual tokens cannot teach it the task as full
    # fine-tuning does (6.3 -> 0.8), but the held-out loss must clearly fall.
    assert end < start - 0.25, (start, end)
    train = [r["sft/loss"] for r in rows[1:]]
    assert sum(train[-5:]) < sum(train[:5]), train
    loaded = _loaded_adapter(tiny_assets, summary["final_model"])
    assert 0 < _trainable_fraction(tiny_assets, loaded) < 0.01
    # The held-out loss of the loaded adapter, over the same packed rows, is the run's last one.
    tokenizer = load_tokenizer(str(tiny_assets.policy))
    examples, _ = load_sft_examples(cfg.data.eval_path, tokenizer, cfg.data)
    rows_ = pack_examples(examples, cfg.data.max_prompt_tokens + cfg.data.max_response_tokens)
    with torch.no_grad():
        loss, _ = sft_micro_batch_loss(loaded, collate_sft(rows_, tokenizer.pad_token_id))
        with adapters_disabled(loaded):
            base_loss, _ = sft_micro_batch_loss(loaded, collate_sft(rows_, tokenizer.pad_token_id))
    assert float(loss) == pytest.approx(end, abs=1e-4)
    if method == "ia3":  # IA3 starts at identity scales: the step-0 model is the base model
        assert float(base_loss) == pytest.approx(start, abs=1e-4)


@pytest.mark.parametrize("method", ["ia3", "prompt_tuning"])
def test_dpo_trains_with_the_method_and_its_adapter_loads_back(tiny_assets, ray_session, tmp_path, method):
    cfg = mode_config("dpo", tiny_assets, tmp_path, "data.train_path=DATA/prefs_train.jsonl",
                      "data.eval_path=DATA/prefs_eval.jsonl", "trainer.steps=20", "eval.every_steps=0",
                      *ONE_REPLICA, *METHOD_SETTINGS[method])
    summary = run_training(cfg)
    rows = read_metrics(str(tmp_path))
    # The reference is the policy with its adapters disabled (the base model): no reference group.
    assert set(json.load(open(tmp_path / "placement.json"))) == {"policy"}
    first, last = rows[0], rows[-1]
    assert last["eval/rewards/accuracy"] >= 0.75 and last["eval/rewards/accuracy"] > first["eval/rewards/accuracy"]
    # beta 0.1 and few trained parameters: the margin moves little, but it must move up.
    assert last["eval/rewards/margin"] > first["eval/rewards/margin"] + 0.05, (first, last)
    assert last["eval/dpo/loss"] < first["eval/dpo/loss"]
    loaded = _loaded_adapter(tiny_assets, summary["final_model"])
    tokenizer = load_tokenizer(str(tiny_assets.policy))
    pairs, _ = load_preference_examples(cfg.data.eval_path, tokenizer, cfg.data)
    batch = collate_preferences(pairs, tokenizer.pad_token_id)
    with torch.no_grad(), adapters_disabled(loaded):
        ref = [summed_response_logprobs(loaded, s, a, m, batch.prompt_len) for s, a, m in (
            (batch.chosen, batch.chosen_attention_mask, batch.chosen_response_mask),
            (batch.rejected, batch.rejected_attention_mask, batch.rejected_response_mask))]
    batch = collate_preferences(pairs, tokenizer.pad_token_id, *ref)
    d = cfg.algorithm.dpo
    with torch.no_grad():
        _, metrics = dpo_micro_batch_loss(loaded, batch, d.beta, d.loss_type, d.label_smoothing, d.simpo_gamma)
    for key in ("dpo/loss", "rewards/accuracy", "rewards/margin"):
        assert metrics[key] == pytest.approx(last[f"eval/{key}"], abs=1e-4), key


def test_ppo_with_ia3_pushes_merged_weights_to_the_engines(tiny_assets, ray_session, tmp_path, capsys):
    from test_plot_cli import assert_real_pngs  # noqa: E402
    from test_ppo import tiny_config  # noqa: E402

    cfg = tiny_config(tiny_assets, tmp_path, "model.peft.type=ia3", "algorithm.advantage=grpo",
                      "ray.policy.replicas=1", "trainer.learning_rate=0.05", "trainer.steps=10", "trainer.save_steps=0",
                      "model.lora.save_merged=true")
    summary = run_training(cfg)
    metrics = read_metrics(str(tmp_path))
    assert summary["reference_folded"] and abs(metrics[0]["kl/mean"]) < 1e-5  # identity scales at the start
    # The scales moved the policy away from the base (KL > 0), and after every update the engine held
    # the merged weights: its log-probs of the sampled tokens are the policy's own.
    assert max(m["kl/mean"] for m in metrics[1:]) > 0.01
    assert max(m["rollout/logprob_abs_diff"] for m in metrics) < 1e-4
    final = summary["final_model"]
    tokens = torch.tensor([[1, 40, 41, 42, 43, 44, 45]])
    adapted = _loaded_adapter(tiny_assets, final)
    merged = load_causal_lm(os.path.join(final, "merged")).eval()
    with torch.no_grad():
        assert torch.allclose(adapted(input_ids=tokens).logits, merged(input_ids=tokens).logits, atol=1e-4)
    # `rlhf plot` draws PPO's curves from this real run.
    from rlhf.cli import main

    capsys.readouterr()
    assert main(["plot", str(tmp_path)]) == 0
    assert_real_pngs(capsys.readouterr().out.split(), {"reward", "kl", "losses", "response_length"})
