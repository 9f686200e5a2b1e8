from __future__ import annotations

import math

import pytest
import torch

from monai_car.losses import CalibrationLoss, GaussianCalibrationLoss


def _samples():
    # one image, 2 samples, 2 classes, 1x2 pixels
    s = torch.zeros(1, 2, 2, 1, 2)
    s[0, 0, :, 0, 0] = torch.tensor([0.9, 0.1])
    s[0, 1, :, 0, 0] = torch.tensor([0.5, 0.5])  # pixel 0: mean (0.7, 0.3)
    s[0, :, :, 0, 1] = torch.tensor([0.2, 0.8])  # pixel 1: mean (0.2, 0.8)
    t = torch.zeros(1, 2, 1, 2)
    t[0, :, 0, 0] = torch.tensor([0.5, 0.5])
    t[0, :, 0, 1] = torch.tensor([0.2, 0.8])
    return s, t


def test_kl_by_hand():
    s, t = _samples()
    kl0 = 0.7 * math.log(0.7 / 0.5) + 0.3 * math.log(0.3 / 0.5)  # 0.08228
    loss = CalibrationLoss()(s, t)
    assert loss.item() == pytest.approx((kl0 + 0.0) / 2, rel=1e-5)


def test_mask_divides_by_valid_pixels():
    s, t = _samples()
    kl0 = 0.7 * math.log(0.7 / 0.5) + 0.3 * math.log(0.3 / 0.5)
    only_first = torch.tensor([[[True, False]]])
    assert CalibrationLoss()(s, t, only_first).item() == pytest.approx(kl0, rel=1e-5)
    only_second = torch.tensor([[[False, True]]]).unsqueeze(1)  # (B, 1, H, W) accepted
    assert CalibrationLoss()(s, t, only_second).item() == pytest.approx(0.0, abs=1e-7)
    none = torch.zeros(1, 1, 2, dtype=torch.bool)
    assert CalibrationLoss()(s, t, none).item() == 0.0


def test_clamp_inside_logs():
    s = torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(1, 2, 2, 1, 1)
    t = torch.tensor([0.0, 1.0]).reshape(1, 2, 1, 1)
    # mean (1, 0); logs clamped to [1e-3, 1 - 1e-3]: 1 * (log(0.999) - log(0.001))
    expected = math.log(0.999) - math.log(0.001)
    assert CalibrationLoss()(s, t).item() == pytest.approx(expected, rel=1e-5)
    assert torch.isfinite(CalibrationLoss(clamp=1e-3)(s, t))


def test_gradient_reaches_samples_not_target():
    s, t = _samples()
    s.requires_grad_(True)
    t.requires_grad_(True)
    CalibrationLoss()(s, t).backward()
    assert s.grad is not None and t.grad is None


def test_gaussian_form():
    samples = torch.tensor([[1.0, 3.0], [0.0, 0.0]])  # (B=2, M=2)
    target = torch.tensor([1.0, 1.0])
    # means (2, 0): 0.5 * ((2-1)^2 + (0-1)^2) / 2 = 0.5
    assert GaussianCalibrationLoss()(samples, target).item() == pytest.approx(0.5)
    assert GaussianCalibrationLoss()(samples, target, torch.tensor([True, False])).item() == pytest.approx(0.5)


def test_shape_errors():
    with pytest.raises(ValueError, match="target"):
        CalibrationLoss()(torch.rand(1, 2, 2, 4, 4), torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="mask"):
        CalibrationLoss()(torch.rand(1, 2, 2, 4, 4), torch.rand(1, 2, 4, 4), torch.ones(1, 5, 5, dtype=torch.bool))
