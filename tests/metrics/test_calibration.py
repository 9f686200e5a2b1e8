from __future__ import annotations

import math

import pytest
import torch
from monai.metrics.calibration import calibration_binning

from monai_car.metrics import (
    SoftTargetCalibrationErrorMetric,
    calibration_error_from_bins,
    calibration_pixel_totals,
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


# --- the Cityscapes options ----------------------------------------------------------------------------------------


def _cityscapes_example() -> tuple[torch.Tensor, torch.Tensor]:
    """One 1x5 image, K = 3, classes 1 and 2 "switchable", void 5 on pixel 4 (predicted 1, but left out)."""
    p = torch.tensor([[0.65, 0.25, 0.1], [0.1, 0.75, 0.15], [0.2, 0.25, 0.55], [0.05, 0.85, 0.1], [0.1, 0.8, 0.1]])
    y = torch.tensor([0, 1, 1, 2, 5]).reshape(1, 1, 1, 5)
    return p.T.reshape(1, 3, 1, 5), y


def test_mose_cityscapes_convention_by_hand():
    p, y = _cityscapes_example()
    # predicted classes 0, 1, 2, 1 (+ void); agreement 1, 1, 0, 0. Errors |conf - acc| per pixel (one per bin):
    # 0.35 (class 0), 0.25, 0.55, 0.85 (classes 1 and 2); 4 valid pixels
    default = compute_soft_target_calibration_error(p, y, confidence="top_label", ignore_index=5)
    assert default.item() == pytest.approx(2.0 / 4)
    mose = compute_soft_target_calibration_error(p, y, confidence="top_label", ignore_index=5, binned_classes=[1, 2])
    assert mose.item() == pytest.approx(1.65 / 4)  # only classes 1, 2 binned, the denominator stays all 4 pixels
    bins = compute_soft_target_calibration_bins(p, y, confidence="top_label", ignore_index=5, binned_classes=[1, 2])
    assert bins[0, 0].tolist() == [0, 0, 0, 0, 0, 1, 0, 1, 1, 0]  # the class-0 pixel (bin 6) is not binned
    assert calibration_error_from_bins(bins).item() == pytest.approx(1.65 / 3)  # binned pixels only: not MoSE
    assert calibration_pixel_totals(y, 5).tolist() == [4.0]
    assert calibration_pixel_totals(y).tolist() == [5.0]


def test_mose_metric_pools_the_totals():
    p, y = _cityscapes_example()
    metric = SoftTargetCalibrationErrorMetric(confidence="top_label", ignore_index=5, binned_classes=[1, 2])
    metric(y_pred=p, y=y)
    metric(y_pred=p[..., :1], y=y[..., :1])  # a second image: one pixel, predicted class 0, not binned
    assert metric.aggregate().item() == pytest.approx(1.65 / 5)
    assert metric.reliability_table()["count"].sum().item() == 3
    plain = SoftTargetCalibrationErrorMetric(confidence="top_label", ignore_index=5)
    plain(y_pred=p, y=y)
    assert plain.aggregate().item() == pytest.approx(0.5)  # default unchanged


def test_zero_confidence_left_out_of_every_bin_by_hand():
    # foreground probabilities 0, 0, 0, 0.25, 0.75, 0.75; two graders: soft targets 0, 0.5, 0, 0.5, 1, 0.5
    p = torch.tensor([0.0, 0.0, 0.0, 0.25, 0.75, 0.75]).reshape(1, 1, 1, 6)
    y = torch.tensor([[0, 1, 0, 1, 1, 1], [0, 0, 0, 0, 1, 0]]).reshape(1, 2, 1, 6)
    # default: the three zeros in bin 1 (|0 - 0.5 / 3| * 3 = 0.5), bin 3 |0.25 - 0.5|, bin 8 |1.5 - 1.5| -> 0.75 / 6
    assert compute_soft_target_calibration_error(p, y).item() == pytest.approx(0.125)
    # Guo et al.'s (lo, hi] bins: the zeros are in no bin and not counted -> 0.25 / 3
    guo = compute_soft_target_calibration_error(p, y, zero_in_first_bin=False)
    assert guo.item() == pytest.approx(0.25 / 3)
    bins = compute_soft_target_calibration_bins(p, y, zero_in_first_bin=False)
    assert bins[0, 0].tolist() == [0, 0, 1, 0, 0, 0, 0, 2, 0, 0]
    metric = SoftTargetCalibrationErrorMetric(zero_in_first_bin=False)
    metric(y_pred=p, y=y)
    assert metric.aggregate().item() == pytest.approx(0.25 / 3)
    # a confidence just above 0 still goes into the first bin
    tiny = compute_soft_target_calibration_bins(p.clamp_min(1e-6), y, zero_in_first_bin=False)
    assert tiny[0, 0, 0].item() == 3


def test_cityscapes_options_validate():
    p, y = _cityscapes_example()
    with pytest.raises(ValueError, match="needs confidence='top_label'"):
        SoftTargetCalibrationErrorMetric(binned_classes=[1])
    with pytest.raises(ValueError, match="non-empty sequence"):
        compute_soft_target_calibration_bins(p, y, confidence="top_label", ignore_index=5, binned_classes=[])
    with pytest.raises(ValueError, match="zero_in_first_bin must be True or False"):
        SoftTargetCalibrationErrorMetric(zero_in_first_bin="no")
    bins = compute_soft_target_calibration_bins(p, y, confidence="top_label", ignore_index=5)
    with pytest.raises(ValueError, match="at least the"):
        calibration_error_from_bins(bins, total=2.0)
    assert calibration_error_from_bins(bins, total=torch.tensor([4.0, 4.0])).item() == pytest.approx(2.0 / 8)
    with pytest.raises(ValueError, match=r"\(B, R, \*spatial\)"):
        calibration_pixel_totals(torch.zeros(2, 3))
