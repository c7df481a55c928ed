import json
import math

import pytest
import torch

from rlhf.kl import KL_ESTIMATORS, AdaptiveKLController, FixedKLController, kl_estimate

LOGP = torch.tensor([[0.0, -1.0]], dtype=torch.float64)
LOGQ = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)


def test_estimator_table():
    assert set(KL_ESTIMATORS) == {"k1", "k2", "k3"}


def test_k1_k2_k3_hand_values():
    assert torch.equal(kl_estimate(LOGP, LOGQ, "k1"), torch.tensor([[1.0, -1.0]], dtype=torch.float64))
    assert torch.equal(kl_estimate(LOGP, LOGQ, "k2"), torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    # log(q/p) = -1: e^-1 - 1 + 1 = e^-1 ; log(q/p) = 1: e - 1 - 1 = e - 2
    expected = torch.tensor([[math.exp(-1), math.e - 2]], dtype=torch.float64)
    assert torch.allclose(kl_estimate(LOGP, LOGQ, "k3"), expected, rtol=1e-12)


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_zero_when_equal(kind):
    x = torch.randn(3, 5)
    assert torch.equal(kl_estimate(x, x.clone(), kind), torch.zeros(3, 5))


def test_k3_precise_for_tiny_ratio():
    logp = torch.tensor([0.0], dtype=torch.float64)
    logq = torch.tensor([1e-6], dtype=torch.float64)
    # e^r - 1 - r = r^2/2 + r^3/6 + ... = 5e-13 + 1.7e-19; a naive exp(r) - 1 - r
    # would be off by ~1e-16 absolute, i.e. ~2e-4 relative.
    assert math.isclose(kl_estimate(logp, logq, "k3").item(), 0.5e-12 + 1e-18 / 6, rel_tol=1e-6)


def test_unknown_kind_names_valid_ones():
    with pytest.raises(ValueError, match="k1.*k2.*k3"):
        kl_estimate(LOGP, LOGQ, "k4")


def test_adaptive_update_by_hand():
    c = AdaptiveKLController(init_coef=0.2, target=6.0, horizon=10000)
    c.update(9.0, 256)  # error = clip(9/6 - 1 = 0.5) = 0.2 -> 0.2 * (1 + 0.2*256/10000)
    assert c.value == pytest.approx(0.201024, rel=1e-12)
    c.update(3.0, 256)  # error = clip(-0.5) = -0.2 -> * (1 - 0.00512)
    assert c.value == pytest.approx(0.201024 * 0.99488, rel=1e-12)  # 0.19999475712
    c.update(6.6, 100)  # error = 0.1 (inside the clip) -> * (1 + 0.1*100/10000)
    assert c.value == pytest.approx(0.19999475712 * 1.001, rel=1e-12)
    c.update(6.0, 1000)  # on target: unchanged
    assert c.value == pytest.approx(0.19999475712 * 1.001, rel=1e-12)


def test_adaptive_accepts_tensor_kl():
    c = AdaptiveKLController(0.1, 1.0, 100)
    c.update(torch.tensor(2.0), 10)  # error 0.2 -> 0.1 * 1.02
    assert c.value == pytest.approx(0.102, rel=1e-12)


def test_fixed_update_is_noop():
    c = FixedKLController(0.05)
    c.update(100.0, 10_000)
    assert c.value == 0.05


def test_state_dict_roundtrip_through_json():
    a = AdaptiveKLController(0.2, 6.0, 10000)
    for kl in (9.0, 1.0, 6.3):
        a.update(kl, 256)
    restored = AdaptiveKLController(1.0, 1.0, 1.0)
    restored.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert restored.state_dict() == a.state_dict()
    a.update(7.0, 64)
    restored.update(7.0, 64)
    assert restored.value == a.value

    f = FixedKLController(0.1)
    g = FixedKLController(0.0)
    g.load_state_dict(json.loads(json.dumps(f.state_dict())))
    assert g.value == 0.1 and g.state_dict() == f.state_dict()


@pytest.mark.parametrize(
    "args", [(0.1, 0.0, 100), (0.1, -1.0, 100), (0.1, 6.0, 0), (0.1, 6.0, -5), (-0.1, 6.0, 100)]
)
def test_adaptive_validates(args):
    with pytest.raises(ValueError):
        AdaptiveKLController(*args)


def test_fixed_validates():
    with pytest.raises(ValueError):
        FixedKLController(-0.01)
    FixedKLController(0.0)
