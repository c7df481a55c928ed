"""TRL's DPOTrainer (current TRL) on bench/compare.py's settings: prompts_per_step pairs per optimizer step.

    bench/.venvs/trl-1.16/bin/python -m bench.trl_dpo SETTINGS.json RESULT.json

Data: .assets/<size>/data/prefs_train.jsonl as chat turns, so TRL applies the same chat template our
pipeline applies. The reference log-probs are computed on the fly (as a separate reference group does).
The "reward" recorded per step is TRL's preference accuracy (chosen reward above rejected).
"""
from __future__ import annotations

import json
import statistics
import time

from bench.trl_common import Recorder, common_training_args, compile_models, read_settings, silence, torch_dtype


def main() -> None:
    silence()
    settings, result_path = read_settings()
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    start = time.perf_counter()
    s = settings
    with open(s["prompts_path"]) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    data = Dataset.from_dict({
        "prompt": [[{"role": "user", "content": r["prompt"]}] for r in rows],
        "chosen": [[{"role": "assistant", "content": r["chosen"]}] for r in rows],
        "rejected": [[{"role": "assistant", "content": r["rejected"]}] for r in rows],
    })
    tokenizer = AutoTokenizer.from_pretrained(s["model_path"])
    pair_tokens = statistics.fmean(
        len(tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]},
                                           {"role": "assistant", "content": r[key]}], tokenize=True,
                                          return_dict=False))
        for r in rows for key in ("chosen", "rejected")) * 2
    model = AutoModelForCausalLM.from_pretrained(s["model_path"], dtype=torch_dtype(s))
    recorder = Recorder()
    pairs = s["prompts_per_step"]

    class Accuracy(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "rewards/accuracies" in logs and recorder.steps:
                recorder.steps[-1]["reward"] = logs["rewards/accuracies"]

    def end_step_hook() -> None:
        recorder.pending_scores, recorder.pending_tokens = [float("nan")] * pairs, round(pairs * pair_tokens)

    args = DPOConfig(
        **common_training_args(s, s["work_dir"]),
        per_device_train_batch_size=s["micro_batch_size"],
        gradient_accumulation_steps=pairs // s["micro_batch_size"],
        max_steps=s["steps"],
        beta=s["dpo_beta"],
        max_length=256,
        **compile_models(s, model),
    )
    step_times = recorder.callback()
    original = step_times.on_step_end

    def on_step_end(args, state, control, **kwargs):
        end_step_hook()
        return original(args, state, control, **kwargs)

    step_times.on_step_end = on_step_end
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         callbacks=[step_times, Accuracy()])
    load_s = time.perf_counter() - start
    trainer.train()
    recorder.write(result_path, load_s, {"pair_tokens": pair_tokens})


if __name__ == "__main__":
    main()
