"""The no-ZeRO gradient check (rlhf/faults.py: all_finite): NaN or inf anywhere in any tensor."""
from __future__ import annotations

import pytest
import torch

from rlhf.faults import all_finite


def _grads(dtype=torch.float32):
    torch.manual_seed(0)
    return [torch.randn(64, 32, dtype=dtype), torch.randn(32, dtype=dtype), torch.randn(7, 5, 3, dtype=dtype)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_one_bad_entry_anywhere_is_found(dtype, bad):
    for which in range(3):
        grads = _grads(dtype)
        grads[which].view(-1)[-1] = bad
        assert not all_finite(grads), (which, bad)


def test_finite_tensors_pass_even_near_the_largest_representable_value():
    grads = _grads(torch.bfloat16)
    grads[0][3, 4] = torch.finfo(torch.bfloat16).max  # a sum or a 2-norm of these would overflow; min and max do not
    grads[0][5, 6] = -torch.finfo(torch.bfloat16).max
    assert all_finite(grads)
    assert all_finite(_grads())
    assert all_finite([])


def test_mixed_dtypes_are_checked_together():
    grads = [torch.randn(4, dtype=torch.bfloat16), torch.randn(4)]  # LoRA: fp32 adapters beside a bf16 base
    assert all_finite(grads)
    grads[1][0] = float("nan")
    assert not all_finite(grads)


def test_empty_tensors_are_skipped():
    assert all_finite([torch.empty(0), torch.ones(3)])
    assert not all_finite([torch.empty(0, 4), torch.tensor([1.0, float("nan")])])
