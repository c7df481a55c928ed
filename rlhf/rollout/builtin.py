"""The built-in engine: batched HF `generate` with KV cache.

At tiny model sizes on CPU it is far faster than vLLM (STACK.md measured 20x): vLLM's
per-step scheduling overhead dominates when the forward itself takes microseconds.
"""
from __future__ import annotations

import io

import torch
from safetensors.torch import load as load_safetensors

from rlhf.rollout.sampling import Generation, SamplingSpec
from rlhf.rollout.sync_group import SyncGroup, TensorSpec


class BuiltinEngine:
    def __init__(self, model, tokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.version = 0
        self.weight_sync = None

    @torch.no_grad()
    def generate(self, prompt_token_ids: list[list[int]], sampling: SamplingSpec) -> list[Generation]:
        if not prompt_token_ids:
            return []
        pad_id = self.tokenizer.pad_token_id
        eos_id = self.tokenizer.eos_token_id
        width = max(len(p) for p in prompt_token_ids)
        device = self.model.device
        input_ids = torch.full((len(prompt_token_ids), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompt_token_ids):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
        torch.manual_seed(sampling.seed)
        out = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            do_sample=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k or None,
            max_new_tokens=sampling.max_new_tokens,
            num_return_sequences=sampling.n,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            stop_strings=list(sampling.stop) or None,
            tokenizer=self.tokenizer if sampling.stop else None,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new_tokens = out.sequences[:, width:]
        # Raw logits (before temperature/top-p), so the reported log-probs are the policy's own.
        logits = torch.stack(out.logits, dim=1).float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        new_tokens, logprobs = new_tokens.cpu(), logprobs.cpu()
        results = []
        for row in range(new_tokens.shape[0]):
            tokens = new_tokens[row].tolist()
            length = self._response_length(tokens, eos_id, pad_id, sampling.stop)
            results.append(
                Generation(tokens[:length], logprobs[row, :length].tolist(), prompt_index=row // sampling.n)
            )
        return results

    def _response_length(self, tokens: list[int], eos_id: int, pad_id: int, stop: tuple[str, ...]) -> int:
        # generate pads finished rows; the response ends at the first EOS (kept) or at the end.
        if eos_id in tokens:
            return tokens.index(eos_id) + 1
        length = len(tokens)
        if pad_id != eos_id:
            while length and tokens[length - 1] == pad_id:
                length -= 1
        if stop:
            # Cut right after the token that completes a stop string (generate stops there too).
            for end in range(1, length + 1):
                text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True)
                if any(s in text for s in stop):
                    return end
        return length

    def load_weights(self, blob: bytes, version: int) -> None:
        """Replace every weight from safetensors bytes (the policy's full state dict)."""
        state = load_safetensors(blob)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        self._check_push(missing, unexpected)
        self.version = version

    def _check_push(self, missing, unexpected) -> None:
        # Tied embeddings appear under one name only; anything else missing is a real mismatch.
        tied = {k for k in missing if "lm_head" in k and getattr(self.model.config, "tie_word_embeddings", False)}
        if set(missing) - tied or unexpected:
            raise ValueError(f"weight push does not match the engine's model: missing {missing}, unexpected {unexpected}")

    def join_weight_sync(self, host: str, port: int, world_size: int, first_rank: int, manifest: list,
                         bucket_mb: int, timeout_s: float, backend: str) -> None:
        """Join the policy's weight-sync group (rlhf.rollout.sync_group) as rank `first_rank`."""
        specs = [TensorSpec(name, tuple(shape), dtype) for name, shape, dtype in manifest]
        self.weight_sync = None
        self.weight_sync = SyncGroup(host, port, first_rank, world_size, backend, timeout_s, specs, bucket_mb,
                                     self.model.device if backend == "nccl" else "cpu")

    @torch.no_grad()
    def receive_weights(self, version: int) -> None:
        """Copy each broadcast bucket into the model's parameters as it arrives."""
        params = self.model.state_dict(keep_vars=True)
        unexpected = []
        for name, tensor in self.weight_sync.receive(reuse_buffer=True):  # copied at once
            if name in params:
                params[name].copy_(tensor)
            else:
                unexpected.append(name)  # keep receiving: every bucket must be taken off the wire
        missing = set(params) - {s.name for s in self.weight_sync.specs}
        self._check_push(sorted(missing), unexpected)
        self.version = version
