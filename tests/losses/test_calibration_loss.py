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


def _kl(p: float, f: float) -> float:
    return p * math.log(p / f) + (1 - p) * math.log((1 - p) / (1 - f))


def test_jackknife_by_hand():
    # one pixel, three samples with foreground 0.2, 0.5, 0.8; F = 0.4
    fg = torch.tensor([0.2, 0.5, 0.8])
    samples = torch.stack([1 - fg, fg], dim=1).reshape(1, 3, 2, 1, 1)
    target = torch.tensor([0.6, 0.4]).reshape(1, 2, 1, 1)
    plugin = _kl(0.5, 0.4)
    loo = [_kl((0.5 + 0.8) / 2, 0.4), _kl((0.2 + 0.8) / 2, 0.4), _kl((0.2 + 0.5) / 2, 0.4)]
    expected = 3 * plugin - 2 * sum(loo) / 3
    assert CalibrationLoss(estimator="plugin")(samples, target).item() == pytest.approx(plugin, rel=1e-5)
    assert CalibrationLoss(estimator="jackknife")(samples, target).item() == pytest.approx(expected, rel=1e-4)
    # identical samples: no spread, the jackknife is the plug-in estimate; one sample: the plug-in estimate
    same = samples[:, :1].expand(1, 3, 2, 1, 1)
    assert CalibrationLoss(estimator="jackknife")(same, target).item() == pytest.approx(_kl(0.2, 0.4), rel=1e-4)
    one = CalibrationLoss(estimator="jackknife")(samples[:, :1], target).item()
    assert one == pytest.approx(_kl(0.2, 0.4), rel=1e-5)
    with pytest.raises(ValueError, match="estimator"):
        CalibrationLoss(estimator="unbiased")


def test_jackknife_does_not_penalise_hard_samples_with_the_right_frequency():
    """Hard samples drawn with F's frequency: the plug-in KL is ~1/(2M) on average, the jackknife ~0 (as soft
    samples that all equal F, which score 0 under both)."""
    gen = torch.Generator().manual_seed(0)
    m, p = 8, 0.3
    hard = (torch.rand(400, m, 1, 4, 4, generator=gen) < p).float()
    samples = torch.cat([1 - hard, hard], dim=2)
    target = torch.tensor([1 - p, p]).reshape(1, 2, 1, 1).expand(400, 2, 4, 4)
    plugin = CalibrationLoss(estimator="plugin")(samples, target).item()
    jackknife = CalibrationLoss(estimator="jackknife")(samples, target).item()
    assert plugin == pytest.approx(1 / (2 * m), rel=0.2)
    assert abs(jackknife) < 0.02
    soft = target.unsqueeze(1).expand(400, m, 2, 4, 4)
    assert CalibrationLoss(estimator="jackknife")(soft, target).item() == pytest.approx(0.0, abs=1e-6)
    # the gradient still pulls the samples' mean towards F
    shifted = (samples * 0.5 + 0.25).requires_grad_(True)
    CalibrationLoss(estimator="jackknife")(shifted, target).backward()
    assert shifted.grad is not None and torch.isfinite(shifted.grad).all()


def test_pixel_sum_is_the_kl_of_the_factorised_label_maps():
    gen = torch.Generator().manual_seed(2)
    fg = torch.rand(2, 3, 1, 4, 5, generator=gen)
    samples = torch.cat([1 - fg, fg], dim=2)
    f = torch.rand(2, 1, 4, 5, generator=gen)
    target = torch.cat([1 - f, f], dim=1)
    mask = torch.rand(2, 4, 5, generator=gen) > 0.3
    for estimator in ("plugin", "jackknife"):
        mean_loss = CalibrationLoss(estimator=estimator)(samples, target)
        sum_loss = CalibrationLoss(estimator=estimator, pixel_reduction="sum")(samples, target)
        assert sum_loss.item() == pytest.approx(20 * mean_loss.item(), rel=1e-5)  # 4 x 5 pixels per image
    # by hand, plug-in: sum over valid pixels of each image, mean over the two images
    p = fg.mean(1)[:, 0]
    kl = p * torch.log(p.clamp(1e-3, 1 - 1e-3) / f[:, 0].clamp(1e-3, 1 - 1e-3))
    kl = kl + (1 - p) * torch.log((1 - p).clamp(1e-3, 1 - 1e-3) / (1 - f[:, 0]).clamp(1e-3, 1 - 1e-3))
    expected = (kl * mask).reshape(2, -1).sum(1).mean()
    got = CalibrationLoss(pixel_reduction="sum")(samples, target, mask=mask)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="pixel_reduction"):
        CalibrationLoss(pixel_reduction="max")


def test_gaussian_jackknife_is_the_unbiased_estimate():
    samples = torch.tensor([[[0.2], [0.5], [1.1]]])  # (B=1, M=3, 1); mean 0.6, unbiased var 0.21
    target = torch.tensor([[0.4]])
    expected = 0.5 * ((0.6 - 0.4) ** 2 - 0.21 / 3)
    assert GaussianCalibrationLoss(estimator="jackknife")(samples, target).item() == pytest.approx(expected, rel=1e-5)
    assert GaussianCalibrationLoss()(samples, target).item() == pytest.approx(0.5 * 0.2**2, rel=1e-5)
    with pytest.raises(ValueError, match="estimator"):
        GaussianCalibrationLoss(estimator="unbiased")


def test_forward_direction_by_hand():
    """``KL(F || mean G)``: pixel 0 mean (0.7, 0.3) vs F (0.5, 0.5); pixel 1 equal (0); masks as the reverse."""
    s, t = _samples()
    kl0 = 0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)  # 0.08698, not the reverse's 0.08228
    loss = CalibrationLoss(direction="forward")(s, t)
    assert loss.item() == pytest.approx(kl0 / 2, rel=1e-5)
    only_first = torch.tensor([[[True, False]]])
    assert CalibrationLoss(direction="forward")(s, t, only_first).item() == pytest.approx(kl0, rel=1e-5)
    # F with an exact zero: 0 log 0 = 0, the loss stays finite
    t0 = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    s0 = torch.tensor([0.8, 0.2]).reshape(1, 1, 2, 1, 1)
    assert CalibrationLoss(direction="forward")(s0, t0).item() == pytest.approx(-math.log(0.8), rel=1e-5)


def test_forward_gradient_does_not_vanish_on_a_dropped_class():
    """Seven saturated samples all drop the class F gives 0.42 (one a little less saturated): the paper's direction
    pulls each sample's logit by ~1e-4 (the softmax's p (1 - p)), the forward direction by about f / M, most on the
    sample nearest to drawing the class."""
    m, f = 7, 0.42
    logits = torch.zeros(1, m, 2, 1, 1)
    logits[:, :, 0] = 9.0
    logits[:, 3, 0] = 6.0  # sample 3 is the nearest to drawing class 1
    target = torch.tensor([1 - f, f]).reshape(1, 2, 1, 1)
    grads = {}
    for direction in ("reverse", "forward"):
        leaf = logits.clone().requires_grad_(True)
        CalibrationLoss(direction=direction)(torch.softmax(leaf, dim=2), target).backward()
        grads[direction] = -leaf.grad[0, :, 1, 0, 0]  # the push towards class 1
    assert grads["reverse"].max() < 3e-3
    p = torch.softmax(logits, dim=2)[0, :, 1, 0, 0]
    # minus d/dlogit of -f log(mean p) - (1 - f) log(mean(1 - p)), with dp/dlogit = p (1 - p)
    expected = f * p * (1 - p) / (m * p.mean()) - (1 - f) * p * (1 - p) / (m * (1 - p).mean())
    assert torch.allclose(grads["forward"], expected, rtol=1e-4)
    assert grads["forward"][3] > 0.3 and grads["forward"].argmax() == 3
    assert grads["forward"].sum() == pytest.approx(f, rel=0.05)  # about f / M per sample in all


def test_forward_direction_refuses_the_jackknife():
    with pytest.raises(ValueError, match="estimator='plugin'"):
        CalibrationLoss(estimator="jackknife", direction="forward")
    with pytest.raises(ValueError, match="direction"):
        CalibrationLoss(direction="sideways")
