from __future__ import annotations

import math

import pytest
import torch
from monai.metrics.calibration import calibration_binning

from monai_car.metrics import (
    SoftTargetCalibrationErrorMetric,
    calibration_error_from_bins,
    compute_soft_target_calibration_bins,
    compute_soft_target_calibration_error,
    reliability_table_from_bins,
)


def _foreground_example() -> tuple[torch.Tensor, torch.Tensor]:
    """One 2x2 image, two graders: confidences 0.05, 0.05, 0.85, 0.95; soft targets 0, 0.5, 1, 0.5."""
    p = torch.tensor([[0.05, 0.05], [0.85, 0.95]]).reshape(1, 1, 2, 2)
    y = torch.tensor([[[0, 1], [1, 1]], [[0, 0], [1, 0]]]).reshape(1, 2, 2, 2)
    return p, y


def test_foreground_by_hand():
    p, y = _foreground_example()
    # bin 0: 2 px, conf 0.05, acc 0.25; bin 8: conf 0.85, acc 1; bin 9: conf 0.95, acc 0.5
    # ECE = (2 * 0.20 + 0.15 + 0.45) / 4 = 0.25
    assert compute_soft_target_calibration_error(p, y).item() == pytest.approx(0.25)
    table = reliability_table_from_bins(compute_soft_target_calibration_bins(p, y))
    assert table["count"].tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert table["mean_confidence"][[0, 8, 9]].tolist() == pytest.approx([0.05, 0.85, 0.95])
    assert table["accuracy"][[0, 8, 9]].tolist() == pytest.approx([0.25, 1.0, 0.5])
    assert table["gap"][9].item() == pytest.approx(0.45)
    assert torch.isnan(table["mean_confidence"][1:8]).all()
    assert table["bin_edges"][3:5].tolist() == pytest.approx([0.3, 0.4])
    # the averaged soft target itself, (B, 1, H, W), gives the same bins as the graders' masks
    soft = y.float().mean(dim=1, keepdim=True)
    torch.testing.assert_close(
        compute_soft_target_calibration_bins(p, soft), compute_soft_target_calibration_bins(p, y)
    )
    # a two-channel softmax (channel 1 = foreground) gives the same bins
    two = torch.cat([1 - p, p], dim=1)
    torch.testing.assert_close(compute_soft_target_calibration_bins(two, y), compute_soft_target_calibration_bins(p, y))


def test_top_label_by_hand():
    probs = torch.tensor(
        [
            [0.68, 0.22, 0.10],  # conf 0.68, class 0; graders (0, 1) -> acc 0.5
            [0.10, 0.65, 0.25],  # conf 0.65, class 1; graders (1, 1) -> acc 1
            [0.28, 0.30, 0.42],  # conf 0.42, class 2; graders (0, 2) -> acc 0.5
            [0.04, 0.04, 0.92],  # conf 0.92, class 2; graders (2, 2) -> acc 1
        ]
    ).T.reshape(1, 3, 2, 2)
    y = torch.tensor([[0, 1, 0, 2], [1, 1, 2, 2]]).reshape(1, 2, 2, 2)
    bins = compute_soft_target_calibration_bins(probs, y, confidence="top_label")
    assert bins[0, 0].tolist() == [0, 0, 0, 0, 1, 0, 2, 0, 0, 1]
    # bin 6: conf 0.665 vs acc 0.75; bin 4: 0.42 vs 0.5; bin 9: 0.92 vs 1 -> (2 * 0.085 + 0.08 + 0.08) / 4
    assert calibration_error_from_bins(bins).item() == pytest.approx(0.0825)
    # a void pixel (ignore_index, here by one grader) is left out: the rest is the first three pixels
    y_void = y.clone()
    y_void[0, 0, 1, 1] = 255
    ece = compute_soft_target_calibration_error(probs, y_void, confidence="top_label", ignore_index=255)
    assert ece.item() == pytest.approx((2 * 0.085 + 0.08) / 3)


def test_bin_edges_zero_and_one():
    p = torch.tensor([0.0, 1.0, 0.5, 0.55]).reshape(1, 1, 1, 4)
    bins = compute_soft_target_calibration_bins(p, torch.zeros(1, 1, 1, 4, dtype=torch.long))
    assert bins[0, 0].tolist() == [1, 0, 0, 0, 1, 1, 0, 0, 0, 1]  # 0 -> first bin, 1 -> last bin, (0.4, 0.5]


def test_pooled_over_images_not_mean_of_images():
    p = torch.full((2, 1, 1, 2), 0.05)
    y = torch.stack([torch.zeros(1, 1, 2), torch.ones(1, 1, 2)]).long()  # image 1: target 0, image 2: target 1
    per_image = [compute_soft_target_calibration_error(p[i : i + 1], y[i : i + 1]).item() for i in range(2)]
    assert per_image == pytest.approx([0.05, 0.95])  # their mean would be 0.5
    metric = SoftTargetCalibrationErrorMetric()
    metric(y_pred=p[:1], y=y[:1])
    metric(y_pred=p[1:], y=y[1:])
    assert metric.aggregate().item() == pytest.approx(0.45)  # one bin: conf 0.05 vs acc 0.5 over all 4 px
    assert metric.reliability_table()["count"][0].item() == 4


def test_agrees_with_monai_calibration_binning():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(3, 1, 8, 9, generator=g)
    y = (torch.rand(3, 4, 8, 9, generator=g) < p).long()  # 4 graders
    bins = compute_soft_target_calibration_bins(p, y).sum(dim=0)
    soft = y.float().mean(dim=1, keepdim=True)
    flat_p, flat_t = p.reshape(1, 1, -1), soft.reshape(1, 1, -1)  # pool the pixels into one "channel"
    mean_p, mean_t, counts = (x[0, 0].double() for x in calibration_binning(flat_p, flat_t, num_bins=10))
    torch.testing.assert_close(bins[0], counts)
    occupied = counts > 0
    torch.testing.assert_close((bins[1] / bins[0])[occupied], mean_p[occupied])
    torch.testing.assert_close((bins[2] / bins[0])[occupied], mean_t[occupied])
    monai_ece = ((mean_p - mean_t).abs() * counts)[occupied].sum() / counts.sum()
    torch.testing.assert_close(calibration_error_from_bins(bins), monai_ece)


def test_calibrated_model_has_zero_ece():
    g = torch.Generator().manual_seed(1)
    y = torch.rand(4, 4, 8, 8, generator=g) < torch.rand(4, 1, 8, 8, generator=g)
    soft = y.float().mean(dim=1, keepdim=True)
    assert compute_soft_target_calibration_error(soft, y).item() == pytest.approx(0.0, abs=1e-12)
    overconfident = (soft >= 0.5).float()  # a deterministic mask on ambiguous pixels
    assert compute_soft_target_calibration_error(overconfident, y).item() > 0.05


def test_metric_matches_functional_and_resets():
    g = torch.Generator().manual_seed(2)
    p = torch.softmax(torch.randn(5, 3, 6, 6, generator=g), dim=1)
    y = torch.randint(0, 3, (5, 2, 6, 6), generator=g)
    metric = SoftTargetCalibrationErrorMetric(num_bins=15, confidence="top_label")
    out = metric(y_pred=p[:2], y=y[:2])
    assert out.shape == (2, 3, 15) and out.dtype == torch.float64
    metric(y_pred=list(p[2:]), y=list(y[2:]))
    expected = compute_soft_target_calibration_error(p, y, num_bins=15, confidence="top_label")
    torch.testing.assert_close(metric.aggregate(), expected)
    assert metric.reliability_table()["count"].sum().item() == 5 * 36
    metric.reset()
    with pytest.raises(ValueError, match="no data"):
        metric.aggregate()


def test_all_pixels_ignored_gives_nan():
    p = torch.full((1, 1, 2, 2), 0.3)
    y = torch.full((1, 2, 2, 2), 255)
    assert math.isnan(compute_soft_target_calibration_error(p, y, ignore_index=255).item())


def test_invalid_inputs():
    p, y = _foreground_example()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        compute_soft_target_calibration_bins(p * 2, y)
    with pytest.raises(ValueError, match="top_label"):
        compute_soft_target_calibration_bins(torch.rand(1, 3, 2, 2), y)
    with pytest.raises(ValueError, match="binary masks"):
        compute_soft_target_calibration_bins(p, y * 2)
    with pytest.raises(ValueError, match="labels in"):
        compute_soft_target_calibration_bins(torch.rand(1, 2, 2, 2), y * 3, confidence="top_label")
    with pytest.raises(ValueError, match="batch size and the spatial shape"):
        compute_soft_target_calibration_bins(p, y[..., :1])
    with pytest.raises(ValueError, match="floating"):
        compute_soft_target_calibration_bins(p.long(), y)
    with pytest.raises(ValueError, match="num_bins"):
        SoftTargetCalibrationErrorMetric(num_bins=0)
    with pytest.raises(ValueError, match="confidence must be one of"):
        SoftTargetCalibrationErrorMetric(confidence="max")
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, num_bins\)"):
        calibration_error_from_bins(torch.zeros(2, 10))
