import torch

from rlhf.algorithms.dynamic_sampling import ScoredRollout, fill_with_informative_groups, informative_groups
from rlhf.records import RolloutBatch

NAN = float("nan")


def test_informative_groups_need_two_finite_different_scores():
    # groups of 2: (1, 1) equal; (0, 1) differ; (nan, 1) one finite; (0.5, 0.5) equal; (1, 0) differ
    scores = torch.tensor([1.0, 1.0, 0.0, 1.0, NAN, 1.0, 0.5, 0.5, 1.0, 0.0])
    assert informative_groups(scores, 2).tolist() == [False, True, False, False, True]


def _part(scores, prompt_len, width, first_row):
    """Groups of two rows: prompt of `prompt_len` tokens, responses of `width` tokens."""
    n = len(scores)
    seq = torch.arange(n * (prompt_len + width)).view(n, -1) + 100 * first_row
    batch = RolloutBatch(seq, torch.ones_like(seq), torch.ones(n, width), torch.full((n, width), -1.0), prompt_len,
                         [f"p{first_row + i}" for i in range(n)], [f"r{first_row + i}" for i in range(n)],
                         list(range(first_row, first_row + n)), policy_version=0)
    return ScoredRollout(batch, torch.full((n, width), -2.0), torch.full((n, width), -3.0), None,
                         torch.tensor(scores))


def test_fill_keeps_informative_groups_and_resamples_until_full():
    first = _part([1.0, 1.0, 0.0, 1.0], prompt_len=2, width=3, first_row=0)   # group 0 flat, group 1 good
    rounds = []

    def more(round_):
        rounds.append(round_)
        return _part([0.0, 0.0, 1.0, 0.0], prompt_len=3, width=2, first_row=10 * round_)  # one good group each
    batch, metrics = fill_with_informative_groups(first, more, group_size=2, max_rounds=3, pad_id=0)
    assert rounds == [1]
    assert metrics == {"sampling/filtered_groups": 2, "sampling/rounds": 1, "sampling/trained_groups": 2}
    # first's good group (rows 2, 3), then round 1's good group (its rows 2, 3 = responses r12, r13)
    assert batch.rollout.responses == ["r2", "r3", "r12", "r13"]
    assert batch.scores.tolist() == [0.0, 1.0, 1.0, 0.0]
    # widest prompt block (3) and response block (3): first's rows gain a left pad, round 1's a right pad
    assert batch.rollout.sequences.shape == (4, 6) and batch.rollout.prompt_len == 3
    assert batch.rollout.attention_mask[0].tolist() == [0, 1, 1, 1, 1, 1]
    assert batch.rollout.response_mask[2].tolist() == [1, 1, 0] and batch.logprobs[2].tolist() == [-2, -2, 0]


def test_fill_trains_on_what_it_has_after_the_last_round():
    first = _part([1.0, 1.0, 0.0, 1.0], prompt_len=2, width=3, first_row=0)
    flat = lambda round_: _part([0.0, 0.0, 1.0, 1.0], prompt_len=2, width=3, first_row=10 * round_)  # noqa: E731
    batch, metrics = fill_with_informative_groups(first, flat, group_size=2, max_rounds=2, pad_id=0)
    assert metrics == {"sampling/filtered_groups": 5, "sampling/rounds": 2, "sampling/trained_groups": 1}
    # the good group, then a flat group whose rows train nothing (mask zeroed)
    assert batch.rollout.response_mask.sum(dim=1).tolist() == [3, 3, 0, 0]
    assert informative_groups(batch.scores[:2], 2).all() and not informative_groups(batch.scores[2:], 2).any()
