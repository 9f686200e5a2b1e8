from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_car.metrics import (
    CalibrationOffsetMetric,
    calibration_offsets_from_sums,
    compute_calibration_offset_sums,
    mode_label_maps,
    switchable_modes,
)
from monai_car.utils.cityscapes_classes import COPY_IDS, FLIP_PROBABILITIES, SWITCHABLE_TRAIN_IDS

VOID = 24


# two switchable classes 1 -> 2 (p = 1/4) and 3 -> 4 (p = 1/2); K = 5 channels; void 9
LAYOUT = {"switchable": [1, 3], "copies": [2, 4]}
P_TRUE = [0.25, 0.5]


def _offset_case():
    y = torch.tensor([[1, 2, 2, 0, 1, 9], [3, 4, 4, 3, 0, 0]]).reshape(2, 1, 1, 6)
    probs = torch.zeros(2, 5, 1, 6, dtype=torch.float64)
    # image 0, channels (0, 1, 2) per pixel; q = p2 / (p1 + p2) on the pixels of class 1 or 2: 1/4, 1/2, 2/3, 0
    probs[0, :3, 0] = torch.tensor(
        [[0.2, 0.0, 0.1, 1.0, 0.0, 0.0], [0.6, 0.5, 0.3, 0.0, 1.0, 0.5], [0.2, 0.5, 0.6, 0.0, 0.0, 0.5]]
    ).double()
    # image 1, channels (3, 4): q = 1/2, 1, 1/2, 0 on the pixels of class 3 or 4
    probs[1, 3:, 0] = torch.tensor([[0.5, 0.0, 0.5, 1.0, 0.0, 0.0], [0.5, 1.0, 0.5, 0.0, 0.0, 0.0]]).double()
    probs[1, 0, 0, 4:] = 1.0
    samples = torch.tensor(
        [[[2, 2, 1, 0, 0, 2], [1, 2, 2, 2, 2, 2]], [[4, 4, 4, 4, 0, 0], [3, 3, 3, 3, 0, 0]]]
    ).reshape(2, 2, 1, 6)
    return y, probs, samples


def test_calibration_offsets_hand_worked():
    y, probs, samples = _offset_case()
    sums = compute_calibration_offset_sums(y, probs, samples, **LAYOUT)
    assert sums.shape == (2, 2, 6)
    r = calibration_offsets_from_sums(sums, P_TRUE)
    # F, class 1: (1/4 + 1/2 + 2/3 + 0) / 4 = 17/48 (void and class-0 pixels are not counted); class 3: 2/4
    np.testing.assert_allclose(r["f_predicted"].numpy(), [17 / 48, 0.5])
    np.testing.assert_allclose(r["f_offset"].numpy(), [5 / 48, 0.0], atol=1e-12)
    # G, class 1: copies among 2 samples x 4 pixels: s1 on pixels 0, 1; s2 on 1, 2, 4 -> 5/8; class 3: 4/8
    np.testing.assert_allclose(r["g_predicted"].numpy(), [5 / 8, 0.5])
    np.testing.assert_allclose(r["g_offset"].numpy(), [3 / 8, 0.0], atol=1e-12)
    assert r["f_offset_mean"].item() == pytest.approx(5 / 96) and r["f_offset_worst"].item() == pytest.approx(5 / 48)
    assert r["g_offset_mean"].item() == pytest.approx(3 / 16) and r["g_offset_worst"].item() == pytest.approx(3 / 8)
    np.testing.assert_allclose(r["observed"].numpy(), [0.5, 0.5])  # the ground truth's own copy frequency
    assert r["f_pixels"].tolist() == [4, 4] and r["g_pixels"].tolist() == [4, 4]
    # options: F's absolute copy probability (0.2 + 0.5 + 0.6 + 0) / 4; G among samples predicting 1 or 2: 5/7
    raw = calibration_offsets_from_sums(
        compute_calibration_offset_sums(y, probs, samples, **LAYOUT, normalize_f=False, normalize_g=True), P_TRUE
    )
    np.testing.assert_allclose(raw["f_predicted"].numpy()[0], 1.3 / 4)
    np.testing.assert_allclose(raw["g_predicted"].numpy(), [5 / 7, 0.5])
    # the black box restricts F's pixels to where it also predicts 1 or 2: pixels 0, 1, 4 -> (1/4 + 1/2 + 0) / 3
    bb = torch.tensor([[1, 2, 0, 0, 1, 1], [3, 4, 4, 3, 0, 0]]).reshape(2, 1, 1, 6)
    boxed = calibration_offsets_from_sums(compute_calibration_offset_sums(y, probs, samples, bb, **LAYOUT), P_TRUE)
    np.testing.assert_allclose(boxed["f_predicted"].numpy(), [0.25, 0.5])
    onehot = torch.nn.functional.one_hot(bb[:, 0], 5).movedim(-1, 1).float()  # (B, K, *spatial) black-box scores
    torch.testing.assert_close(compute_calibration_offset_sums(y, probs, samples, onehot, **LAYOUT), _sums_boxed(bb))


def _sums_boxed(bb: torch.Tensor) -> torch.Tensor:
    y, probs, samples = _offset_case()
    return compute_calibration_offset_sums(y, probs, samples, bb, **LAYOUT)


def test_calibration_offsets_pool_pixels_not_images():
    """Pooled over pixels: an image with 3 pixels of the class weighs 3 times one with 1 pixel."""
    y = torch.tensor([[1, 1, 1], [1, 0, 0]]).reshape(2, 1, 1, 3)
    probs = torch.zeros(2, 3, 1, 3)
    probs[:, 1], probs[:, 2] = 0.5, 0.5  # q = 1/2 on image 0
    probs[1, 1, 0, 0], probs[1, 2, 0, 0] = 0.9, 0.1  # q = 0.1 on image 1's single pixel
    r = calibration_offsets_from_sums(compute_calibration_offset_sums(y, probs, None, None, [1], [2]), [0.5])
    assert r["f_predicted"].item() == pytest.approx((3 * 0.5 + 0.1) / 4)
    assert torch.isnan(r["g_predicted"]).all() and torch.isnan(r["g_offset_mean"])  # no samples given


def test_calibration_offset_metric_accumulates_and_reports():
    y, probs, samples = _offset_case()
    metric = CalibrationOffsetMetric(**LAYOUT, flip_probabilities=P_TRUE, class_names=["a2", "b2"])
    hard = torch.nn.functional.one_hot(samples, 5).movedim(-1, 2).float()  # (B, S, K, *spatial) probabilities
    metric(y_pred=hard[:1], y=y[:1], calibration_probs=probs[:1])
    metric(y_pred=hard[1:], y=y[1:], calibration_probs=probs[1:])
    out = metric.aggregate()
    offsets = {f"{n}_offset_{k}" for n in ("f", "g") for k in ("mean", "worst", "a2", "b2")}
    assert set(out) == offsets | {f"{n}_predicted_{k}" for n in ("f", "g") for k in ("a2", "b2")}
    for net in ("f", "g"):  # the predicted copy probabilities are the ones the offsets were taken from
        assert abs(P_TRUE[0] - out[f"{net}_predicted_a2"]) == pytest.approx(out[f"{net}_offset_a2"])
    assert out["f_offset_a2"] == pytest.approx(5 / 48) and out["g_offset_a2"] == pytest.approx(3 / 8)
    assert out["g_offset_mean"] == pytest.approx(3 / 16) and out["f_offset_worst"] == pytest.approx(5 / 48)
    first = CalibrationOffsetMetric(**LAYOUT, flip_probabilities=P_TRUE, num_samples=1, from_probabilities=False)
    first(y_pred=samples, y=y)
    assert "g_offset_copy2" in first.aggregate()
    assert first.report()["g_predicted"][0].item() == pytest.approx(2 / 4)  # s1 alone: pixels 0 and 1 of 4
    with pytest.raises(ValueError, match="unexpected keyword"):
        metric(y_pred=hard, y=y, probs=probs)
    with pytest.raises(ValueError, match="one name per switchable class"):
        CalibrationOffsetMetric(**LAYOUT, flip_probabilities=P_TRUE, class_names=["a2"])
    with pytest.raises(ValueError, match="one per class"):
        CalibrationOffsetMetric(**LAYOUT, flip_probabilities=[0.5])


def test_known_flips_offsets_are_the_sampling_error():
    """Images flipped with the Cityscapes probabilities; F predicting each class's pooled copy frequency and G's
    samples equal to the flipped label make both offsets equal |p - observed|, the test set's own sampling error."""
    g = torch.Generator().manual_seed(0)
    base = torch.tensor(list(SWITCHABLE_TRAIN_IDS) * 4 + [2, VOID]).reshape(1, 1, 2, 11).expand(64, 1, 2, 11)
    modes, weights = switchable_modes()
    drawn = torch.multinomial(weights.float(), 64, replacement=True, generator=g)
    maps = mode_label_maps(base)
    y = maps[torch.arange(64), drawn][:, None]
    r0 = calibration_offsets_from_sums(compute_calibration_offset_sums(y, None, y.expand(-1, 3, -1, -1)))
    observed = modes[drawn].double().mean(dim=0)
    torch.testing.assert_close(r0["observed"], observed)
    torch.testing.assert_close(r0["g_predicted"], observed)
    probs = torch.zeros(64, 25, 2, 11, dtype=torch.float64)
    for i, (o, c) in enumerate(zip(SWITCHABLE_TRAIN_IDS, COPY_IDS)):
        probs[:, o], probs[:, c] = 1 - observed[i], observed[i]
    r = calibration_offsets_from_sums(compute_calibration_offset_sums(y, probs))
    torch.testing.assert_close(r["f_offset"], (torch.tensor(FLIP_PROBABILITIES).double() - observed).abs())
    # and the binomial error of 64 images stays small: |p - observed| <= 4 standard errors
    sd = (torch.tensor(FLIP_PROBABILITIES) * (1 - torch.tensor(FLIP_PROBABILITIES)) / 64).sqrt().double()
    assert bool((r["f_offset"] <= 4 * sd).all())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"y": torch.zeros(1, 2, 3, dtype=torch.long)}, r"\(B, 1, \*spatial\)"),
        ({"calibration_probs": torch.zeros(1, 3, 1, 6)}, "K >= 5"),
        ({"calibration_probs": torch.full((1, 5, 1, 6), 2.0)}, r"in \[0, 1\]"),
        ({"calibration_probs": torch.zeros(1, 5, 1, 5)}, "on the grid of y"),
        ({"samples": torch.zeros(1, 0, 1, 6, dtype=torch.long)}, "no sample"),
        ({"samples": torch.full((1, 2, 1, 6), 0.5)}, "non-integral"),
        ({"black_box": torch.zeros(2, 1, 1, 6, dtype=torch.long)}, "on the grid of y"),
    ],
)
def test_calibration_offset_sums_validate(kwargs, match):
    args = {"y": torch.ones(1, 1, 1, 6, dtype=torch.long), **kwargs}
    with pytest.raises(ValueError, match=match):
        compute_calibration_offset_sums(**args, **LAYOUT)


def test_offsets_from_sums_validate():
    with pytest.raises(ValueError, match=r"\(\.\.\., n, 6\)"):
        calibration_offsets_from_sums(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="2 switchable classes"):
        calibration_offsets_from_sums(torch.zeros(2, 6), [0.5])
