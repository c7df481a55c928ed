"""TRL's GRPOTrainer (current TRL) on the settings bench/compare.py wrote: one generation per step.

    bench/.venvs/trl-1.16/bin/python -m bench.trl_grpo SETTINGS.json RESULT.json

Mapping: a step is one generation of prompts_per_step * samples_per_prompt completions, followed by
ppo_epochs optimizer steps over all of it (num_iterations), in micro-batches of micro_batch_size with
gradient accumulation: the same work our step does with mini_batch_size equal to the rollout batch.
"""
from __future__ import annotations

import time

from bench.trl_common import (Recorder, common_training_args, compile_models, read_prompts, read_settings, silence,
                              torch_dtype)


def main() -> None:
    silence()
    settings, result_path = read_settings()
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    start = time.perf_counter()
    s = settings
    batch = s["prompts_per_step"] * s["samples_per_prompt"]
    if s["mini_batch_size"] != batch:
        raise SystemExit("the TRL GRPO side maps one generation to one mini-batch: mini_batch_size must equal "
                         f"prompts_per_step * samples_per_prompt ({batch})")
    texts = read_prompts(s["prompts_path"])
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": t}] for t in texts], "text": texts})
    tokenizer = AutoTokenizer.from_pretrained(s["model_path"])
    model = AutoModelForCausalLM.from_pretrained(s["model_path"], dtype=torch_dtype(s))
    recorder = Recorder()

    def letters(prompts, completions, completion_ids, text, **kwargs):
        return recorder.score(text, [c[0]["content"] for c in completions], [len(ids) for ids in completion_ids])

    args = GRPOConfig(
        **common_training_args(s, s["work_dir"]),
        per_device_train_batch_size=s["micro_batch_size"],
        gradient_accumulation_steps=batch // s["micro_batch_size"],
        num_generations=s["samples_per_prompt"],
        max_completion_length=s["max_new_tokens"],
        temperature=s["temperature"], top_p=1.0, top_k=0,
        num_iterations=s["ppo_epochs"],
        max_steps=s["steps"] * s["ppo_epochs"],
        epsilon=s["clip_eps"],
        beta=s["kl_coef"],
        use_vllm=False,
        log_completions=False,
        **compile_models(s, model),
    )
    trainer = GRPOTrainer(model=model, reward_funcs=letters, args=args, train_dataset=data,
                          processing_class=tokenizer, callbacks=[recorder.callback(s["ppo_epochs"])])
    load_s = time.perf_counter() - start
    trainer.train()
    recorder.write(result_path, load_s, {"trl_loss_type": args.loss_type})


if __name__ == "__main__":
    main()
