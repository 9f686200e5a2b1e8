"""ECE and sharpness against a known distribution: exact soft targets worked by hand, ECE 0 for the true
distribution itself, sampling noise only for samples drawn from it, sharpness 0 for one-hot and ln K for uniform."""

from __future__ import annotations

import math

import pytest
import torch

from monai_car.metrics import KnownDistributionCalibrationMetric, known_distribution_targets

LAYOUT = {"switchable": [1, 2], "copies": [3, 4], "flip_probabilities": [0.25, 0.5]}
K = 6  # 0 background, 1 and 2 switchable, 3 and 4 their copies, 5 void


def _label() -> torch.Tensor:
    return torch.tensor([[[[0, 1, 1, 2], [2, 5, 0, 1]]]])  # (1, 1, 2, 4)


def test_targets_by_hand():
    predicted = torch.tensor([[[0, 1, 3, 4], [2, 0, 1, 1]]])
    t = known_distribution_targets(predicted, _label(), **LAYOUT)
    expected = torch.tensor([[[1.0, 0.75, 0.25, 0.5], [0.5, 0.0, 0.0, 0.75]]], dtype=torch.float64)
    assert torch.equal(t, expected)
    flipped = torch.tensor([[[[0, 3, 1, 4], [2, 5, 0, 3]]]])  # copies map back to their originals: same targets
    assert torch.equal(known_distribution_targets(predicted, flipped, **LAYOUT), expected)
    with pytest.raises(ValueError, match="grid"):
        known_distribution_targets(predicted[..., :2], _label(), **LAYOUT)


def _true_distribution(label: torch.Tensor) -> torch.Tensor:
    """``(B, K, *spatial)``: the known per-pixel distribution of an unflipped label map."""
    gt = label[:, 0]
    p = torch.nn.functional.one_hot(gt.clamp_max(K - 1), K).movedim(-1, 1).double()
    for original, copy, q in zip(LAYOUT["switchable"], LAYOUT["copies"], LAYOUT["flip_probabilities"]):
        on = (gt == original).double()
        p[:, original] -= q * on
        p[:, copy] += q * on
    return p


def test_the_true_distribution_has_ece_zero_and_sharp_samples_sharpness_zero():
    torch.manual_seed(0)
    label = torch.tensor([0, 1, 2, 5])[torch.randint(0, 4, (3, 1, 8, 8))]  # unflipped classes and void
    truth = _true_distribution(label)
    metric = KnownDistributionCalibrationMetric(**LAYOUT, ignore_index=5, binned_classes=())
    # samples: every pixel one-hot, drawn from the true distribution, 400 of them
    draws = torch.distributions.Categorical(probs=truth.movedim(1, -1)).sample((400,)).movedim(0, 1)  # (B, S, H, W)
    samples = torch.nn.functional.one_hot(draws, K).movedim(-1, 2).float()
    metric(y_pred=samples, y=label, calibration_probs=truth.float())
    out = metric.aggregate()
    assert out["ece_calibration"] == pytest.approx(0.0, abs=1e-6)  # in every bin the confidence is the target
    assert out["sample_sharpness"] == pytest.approx(0.0, abs=1e-6)
    # the samples' frequencies: off only by sampling noise (binomial sd <= 0.025 at 400 draws)
    assert out["ece_samples"] < 0.03


def test_ece_by_hand_with_mose_convention_and_uniform_sharpness():
    label = _label()
    probs = torch.zeros(1, K, 2, 4)
    probs[0, 0] = 0.95  # background predicted everywhere at 0.95 (not binned: background is not a switchable class)
    probs[0, 1, 0, 1] = 1.0
    probs[0, 0, 0, 1] = 0.0
    probs[0, :, 0, 1] = torch.tensor([0.0, 0.85, 0.0, 0.15, 0.0, 0.0])  # pixel (0, 1): class 1 at 0.85, true 0.75
    uniform = torch.full((1, 2, K, 2, 4), 1.0 / K)
    metric = KnownDistributionCalibrationMetric(**LAYOUT, ignore_index=5)
    metric(y_pred=uniform, y=label, calibration_probs=probs)
    out = metric.aggregate()
    # one binned pixel (conf 0.85, target 0.75) over 7 valid pixels
    assert out["ece_calibration"] == pytest.approx(0.1 / 7)
    assert out["sample_sharpness"] == pytest.approx(math.log(K))
    tables = metric.reliability_tables()
    assert float(tables["calibration"]["count"].sum()) == 1.0


def test_inputs_are_checked():
    metric = KnownDistributionCalibrationMetric(**LAYOUT)
    with pytest.raises(ValueError, match="B, S, K"):
        metric(y_pred=torch.rand(1, K, 2, 4), y=_label())
    with pytest.raises(ValueError, match="too few"):
        metric(y_pred=torch.rand(1, 2, 3, 2, 4), y=_label())
    with pytest.raises(ValueError, match="calibration_probs"):
        metric(y_pred=torch.rand(1, 2, K, 2, 4), y=_label(), calibration_probs=torch.rand(1, K, 2, 2))
    with pytest.raises(ValueError, match="unexpected"):
        metric(y_pred=torch.rand(1, 2, K, 2, 4), y=_label(), probs=None)
