"""A mini-batch split over data-parallel replicas and micro-batches gives the big batch's gradient.

The trainer (actors/trainer.py) runs `plan_micro_batches` on each replica's shard of a mini-batch,
calls the PPO objective on every micro-batch and hands the loss to DeepSpeed, which divides it by
the accumulation steps and averages gradients over replicas. This test does exactly that sum with
plain autograd on a tiny float64 Llama, with the same objective, the same planning (and trimming)
of micro-batches and the same `with_loss_denominator` the driver attaches to each mini-batch.
"""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlhf.algorithms.ppo_losses import policy_micro_batch_loss, with_loss_denominator
from rlhf.losses import LOSS_AGG_MODES
from rlhf.records import Experience
from rlhf.training.micro_batches import plan_micro_batches

ROWS, P, R, NORM_LEN = 8, 3, 5, 6


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=24, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(cfg).double().eval()  # eval: no dropout, so every forward is the same function


def _experience(model) -> Experience:
    g = torch.Generator().manual_seed(1)
    prompt_lens = [3, 2, 3, 1, 3, 2, 3, 3]
    response_lens = [5, 1, 3, 0, 4, 5, 2, 1]  # one all-masked row, two length-1 responses
    seq = torch.randint(3, 24, (ROWS, P + R), generator=g)
    attn = torch.zeros(ROWS, P + R, dtype=torch.long)
    mask = torch.zeros(ROWS, R, dtype=torch.float64)
    for i, (p, r) in enumerate(zip(prompt_lens, response_lens)):
        attn[i, P - p:P + r] = 1
        mask[i, :r] = 1
    seq = torch.where(attn.bool(), seq, torch.zeros_like(seq))
    noise = lambda scale: scale * torch.randn(ROWS, R, generator=g, dtype=torch.float64)  # noqa: E731
    with torch.no_grad():
        from rlhf.models.forward import policy_logprobs
        current = policy_logprobs(model, seq, attn, P)[0]
    # Old log-probs off by up to ~0.3 so some tokens clip; rollout and reference log-probs elsewhere.
    return Experience(seq, attn, mask, (current + noise(0.3)) * mask, noise(1.0), torch.zeros(ROWS, R), None, P,
                      rollout_logprobs=(current + noise(0.2)) * mask, ref_logprobs=(current + noise(0.5)) * mask,
                      kl_coef=0.1)


VARIANTS = {
    "plain": {},
    "everything": dict(clip_eps_high=0.28, is_correction="tis", is_cap=1.2, kl_in_loss=True, kl_estimator="k3"),
    "gspo": dict(ratio_level="sequence", is_correction="seq_mis", is_cap=2.0),
}


def _gradient(model, mini: Experience, loss_agg: str, replicas: int, micro_batches: int,
              mini_batch_denominator: bool = True, **options) -> torch.Tensor:
    """Sum over replicas' micro-batches of loss / accumulation steps, averaged over replicas (DeepSpeed's way).
    Without `mini_batch_denominator` each micro-batch is aggregated on its own (the form before it)."""
    params = [p for p in model.parameters()]
    micro_size = len(mini) // (replicas * micro_batches)
    if mini_batch_denominator:
        mini = with_loss_denominator(mini, loss_agg, NORM_LEN, parts=replicas * micro_batches)
    total = [torch.zeros_like(p) for p in params]
    for shard in mini.split(replicas):
        micros = plan_micro_batches(shard, micro_size)
        assert len(micros) == micro_batches
        for micro in micros:
            loss, _ = policy_micro_batch_loss(model, micro, clip_eps=0.2, entropy_coef=0.01, loss_agg=loss_agg,
                                              norm_len=NORM_LEN, **options)
            grads = torch.autograd.grad(loss / micro_batches, params, allow_unused=True)
            total = [t + (g if g is not None else 0) for t, g in zip(total, grads)]
    return torch.cat([t.flatten() for t in total]) / replicas


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("loss_agg", LOSS_AGG_MODES)
def test_gradient_is_the_same_for_any_split(loss_agg, variant):
    model = _model()
    mini = _experience(model)
    big = _gradient(model, mini, loss_agg, 1, 1, **VARIANTS[variant])
    assert big.abs().max() > 1e-3  # a real gradient, not zeros
    for replicas, micro_batches in [(1, 4), (2, 1), (2, 4)]:
        split = _gradient(model, mini, loss_agg, replicas, micro_batches, **VARIANTS[variant])
        assert torch.allclose(split, big, atol=1e-6, rtol=0), (replicas, micro_batches, (split - big).abs().max())


def test_token_mean_weighs_every_token_of_the_mini_batch_the_same():
    # Micro-batches holding different token counts: a mean of per-micro-batch token means would
    # reweight tokens (the form used before); the mini-batch's token count as denominator does not.
    model = _model()
    mini = _experience(model)
    counts = [float(m.response_mask.sum()) for m in plan_micro_batches(mini, 2)]
    assert len(set(counts)) > 1
    big = _gradient(model, mini, "token_mean", 1, 1)
    mean_of_means = _gradient(model, mini, "token_mean", 1, 4, mini_batch_denominator=False)
    assert not torch.allclose(mean_of_means, big, atol=1e-6, rtol=0)
    assert torch.allclose(_gradient(model, mini, "token_mean", 1, 4), big, atol=1e-6, rtol=0)


def test_default_objective_is_bitwise_the_previous_formula():
    # Before the policy-gradient menu the objective was: token mean of -min(rA, clip(r)A) per micro-batch,
    # minus entropy_coef * the token-mean entropy. A batch with no mini-batch denominator attached (the
    # objective called on its own) must give exactly those numbers under the defaults.
    from rlhf.masked import masked_mean
    from rlhf.models.forward import policy_logprobs

    model = _model()
    mini = _experience(model)
    for micro in plan_micro_batches(mini, 2):
        loss, metrics = policy_micro_batch_loss(model, micro, clip_eps=0.2, entropy_coef=0.01)
        logprobs, entropy = policy_logprobs(model, micro.sequences, micro.attention_mask, micro.prompt_len, True)
        keep = micro.response_mask.bool()
        log_ratio = torch.where(keep, logprobs - micro.old_logprobs, torch.zeros(()).double())
        adv = torch.where(keep, micro.advantages, torch.zeros(()).double())
        ratio = torch.exp(log_ratio)
        before = masked_mean(-torch.minimum(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv), keep)
        before = before - 0.01 * masked_mean(entropy, micro.response_mask)
        assert loss.item() == before.item()
        assert "rollout/mismatch_kl" not in metrics and "policy/kl_loss" not in metrics
