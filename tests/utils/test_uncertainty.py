from __future__ import annotations

import math

import pytest
import torch
from monai.data import MetaTensor

from monai_car.utils.uncertainty import (
    calibration_entropy,
    entropy,
    foreground_probability,
    mean_sample_entropy,
    mutual_information,
    sample_mean_entropy,
    sample_variance,
    uncertainty_maps,
)

LN2 = math.log(2.0)


def _two_disagreeing_samples() -> torch.Tensor:
    """(B=1, S=2, K=2, 1, 1): one sample says background, the other foreground."""
    return torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 2, 1, 1)


def test_hand_values_two_confident_samples_that_disagree():
    s = _two_disagreeing_samples()
    assert sample_mean_entropy(s).item() == pytest.approx(LN2, abs=1e-6)
    assert mean_sample_entropy(s).item() == pytest.approx(0.0, abs=1e-6)
    assert mutual_information(s).item() == pytest.approx(LN2, abs=1e-6)
    assert sample_variance(s).item() == pytest.approx(0.25, abs=1e-7)
    assert sample_variance(s, per_class=True).flatten().tolist() == pytest.approx([0.25, 0.25])


def test_hand_values_agreeing_uncertain_samples():
    # both samples say (0.5, 0.5): all uncertainty is aleatoric, none epistemic
    s = torch.full((1, 2, 2, 1, 1), 0.5)
    assert sample_mean_entropy(s).item() == pytest.approx(LN2, abs=1e-6)
    assert mean_sample_entropy(s).item() == pytest.approx(LN2, abs=1e-6)
    assert mutual_information(s).item() == pytest.approx(0.0, abs=1e-6)
    assert sample_variance(s).item() == pytest.approx(0.0, abs=1e-7)


def test_entropy_values_and_dims():
    uniform4 = torch.full((2, 4, 3, 5), 0.25)
    h = entropy(uniform4, dim=1)
    assert h.shape == (2, 3, 5)
    assert torch.allclose(h, torch.full_like(h, math.log(4.0)))
    one_hot = torch.zeros(1, 3, 2, 2)
    one_hot[:, 1] = 1.0
    assert torch.equal(calibration_entropy(one_hot), torch.zeros(1, 2, 2))
    # one channel = Bernoulli foreground probability
    p = torch.tensor([[[0.5, 0.0, 1.0, 0.25]]])  # (B=1, K=1, W=4)
    expected = [LN2, 0.0, 0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]
    assert calibration_entropy(p)[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_never_nan_with_exact_zeros_and_metatensor_input():
    s = torch.zeros(2, 3, 2, 4, 4)
    s[:, :, 0] = 1.0
    for fn in (sample_mean_entropy, mean_sample_entropy, mutual_information, sample_variance):
        out = fn(MetaTensor(s))
        assert type(out) is torch.Tensor
        assert torch.isfinite(out).all() and (out >= 0).all()
        assert out.shape == (2, 4, 4)


def test_mutual_information_bounds_random():
    g = torch.Generator().manual_seed(0)
    s = torch.softmax(torch.randn(3, 7, 3, 6, 6, generator=g) * 3, dim=2)
    mi = mutual_information(s)
    assert (mi >= 0).all() and (mi <= math.log(3.0) + 1e-6).all()
    assert torch.allclose(mi, sample_mean_entropy(s) - mean_sample_entropy(s), atol=1e-6)


def test_foreground_probability_multiclass_and_variance_3d():
    s = torch.zeros(1, 4, 3, 2, 2, 2)  # (B, S, K, H, W, D)
    s[:, :2, 0] = 1.0  # two samples background
    s[:, 2:, 2] = 1.0  # two samples class 2
    assert torch.equal(foreground_probability(s[:, 3], dim=1), torch.ones(1, 2, 2, 2))
    assert torch.allclose(sample_variance(s), torch.full((1, 2, 2, 2), 0.25))
    assert sample_variance(s, per_class=True).shape == (1, 3, 2, 2, 2)


def test_uncertainty_maps_keys_and_shapes():
    s = torch.softmax(torch.randn(2, 5, 2, 8, 8), dim=2)
    p = s.mean(1)
    maps = uncertainty_maps(s, p)
    assert set(maps) == {"entropy_calibration", "entropy_sample_mean", "mutual_information", "sample_variance"}
    assert all(m.shape == (2, 8, 8) for m in maps.values())
    assert torch.allclose(maps["entropy_calibration"], maps["entropy_sample_mean"])
    assert "entropy_calibration" not in uncertainty_maps(s)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: entropy([0.5, 0.5]), "torch.Tensor"),
        (lambda: entropy(torch.ones(2, 2, dtype=torch.long)), "floating"),
        (lambda: entropy(torch.tensor([[float("nan"), 1.0]])), "NaN"),
        (lambda: entropy(torch.ones(2, 2), dim=3), "out of range"),
        (lambda: mutual_information(torch.rand(2, 2, 4)), "at least 4 dims"),
        (lambda: calibration_entropy(torch.rand(2, 4)), "at least 3 dims"),
        (lambda: uncertainty_maps(torch.rand(1, 2, 2, 4, 4), torch.rand(1, 3, 4, 4)), "matching samples"),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call()
