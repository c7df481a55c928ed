"""TRL's PPOTrainer (TRL 1.12, `trl.experimental.ppo`, the last release with it) on bench/compare.py's settings.

    bench/.venvs/trl-1.12/bin/python -m bench.trl_ppo SETTINGS.json RESULT.json

TRL's PPO scores with a reward *model* only. To score with the same function as our side, the
reward model here is a marker module, and TRL's `get_reward` is wrapped so that for that marker it
decodes the prompt and the EOS-truncated response and calls rlhf.tasks:letter_reward; every other
call (the value model) goes to TRL's own code. Mapping: one sample per prompt (our side runs with
samples_per_prompt 1), one mini-batch per step (num_mini_batches 1: TRL accumulates gradients over
the whole batch whatever num_mini_batches says), ppo_epochs epochs, one optimizer for policy and value.
"""
from __future__ import annotations

import time

import torch

from bench.trl_common import (Recorder, common_training_args, compile_models, read_prompts, read_settings, silence,
                              torch_dtype)


class LetterRewardMarker(torch.nn.Module):
    """Stands in for the reward model; its score comes from the wrapped get_reward below."""


def main() -> None:
    silence()
    settings, result_path = read_settings()
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    import trl.experimental.ppo.ppo_trainer as ppo_module

    start = time.perf_counter()
    s = settings
    if s["samples_per_prompt"] != 1 or s["mini_batch_size"] != s["prompts_per_step"]:
        raise SystemExit("the TRL PPO side runs one sample per prompt and one mini-batch per step")
    batch = s["prompts_per_step"]
    tokenizer = AutoTokenizer.from_pretrained(s["model_path"])
    texts = read_prompts(s["prompts_path"])
    ids = [tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                         tokenize=True, return_dict=False) for t in texts]
    data = Dataset.from_dict({"input_ids": ids})
    dtype = torch_dtype(s)
    policy = AutoModelForCausalLM.from_pretrained(s["model_path"], dtype=dtype)
    reference = AutoModelForCausalLM.from_pretrained(s["model_path"], dtype=dtype)
    value = AutoModelForSequenceClassification.from_pretrained(s["model_path"], num_labels=1, dtype=dtype)
    torch.nn.init.zeros_(value.score.weight)  # as our critic: a fresh head starts at zero
    marker = LetterRewardMarker()
    recorder = Recorder()
    original_get_reward = ppo_module.get_reward

    def get_reward(model, query_responses, pad_token_id, context_length):
        if model is not marker:
            return original_get_reward(model, query_responses, pad_token_id, context_length)
        prompts = tokenizer.batch_decode(query_responses[:, :context_length], skip_special_tokens=True)
        responses = query_responses[:, context_length:]
        lengths = (responses != pad_token_id).sum(dim=1).tolist()
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        scores = torch.tensor(recorder.score(prompts, texts, lengths), dtype=dtype)
        return None, scores, None

    ppo_module.get_reward = get_reward
    args = ppo_module.PPOConfig(
        **common_training_args(s, s["work_dir"]),
        per_device_train_batch_size=s["micro_batch_size"],
        gradient_accumulation_steps=batch // s["micro_batch_size"],
        num_mini_batches=1,
        total_episodes=s["steps"] * batch,
        local_rollout_forward_batch_size=batch,
        num_ppo_epochs=s["ppo_epochs"],
        response_length=s["max_new_tokens"],
        temperature=s["temperature"],
        stop_token="eos",
        kl_coef=s["kl_coef"], kl_estimator="k1",
        cliprange=s["clip_eps"], cliprange_value=s["clip_eps"],
        gamma=s["gamma"], lam=s["gae_lambda"],
        whiten_rewards=False,
        num_sample_generations=0,
        **compile_models(s, policy, value),
    )
    trainer = ppo_module.PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=reference,
                                    reward_model=marker, train_dataset=data, value_model=value,
                                    callbacks=[recorder.callback()])
    load_s = time.perf_counter() - start
    trainer.train()
    recorder.write(result_path, load_s)


if __name__ == "__main__":
    main()
