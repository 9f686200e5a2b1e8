"""The metrics count pairs over each image's foreground window only: the numbers must be those of the whole image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import monai_car.metrics.pairwise_iou as pairwise_module
from monai_car.metrics import (
    compute_ged_terms,
    compute_generalized_energy_distance,
    compute_hungarian_matched_iou,
    compute_pairwise_class_iou,
    compute_pairwise_iou,
)
from monai_car.metrics.utils import crop_to_foreground


def _iou(p: np.ndarray, q: np.ndarray) -> float:
    union = np.logical_or(p, q).sum()
    return 1.0 if union == 0 else np.logical_and(p, q).sum() / union


def _ged_loop(s: np.ndarray, y: np.ndarray, classes: list[int] | None = None) -> tuple[float, float, float]:
    """Per-pair numpy reference over the whole image: (cross, samples, labels); label maps average 1 - IoU_c."""

    def d(p, q):
        if classes is None:
            return 1.0 - _iou(p, q)
        return float(np.mean([1.0 - _iou(p == c, q == c) for c in classes]))

    return (
        float(np.mean([d(a, b) for a in s for b in y])),
        float(np.mean([d(a, b) for a in s for b in s])),
        float(np.mean([d(a, b) for a in y for b in y])),
    )


def _hm_iou_loop(s: np.ndarray, y: np.ndarray) -> float:
    n = math.lcm(len(s), len(y))
    iou = np.array([[_iou(s[i % len(s)], y[j % len(y)]) for j in range(n)] for i in range(n)])
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return float(iou[rows, cols].mean())


def _border_masks(spatial: tuple[int, ...] = (20, 24)) -> tuple[torch.Tensor, torch.Tensor]:
    """(4, 5, *spatial) samples and (4, 3, *spatial) graders: lesions at the borders, in a corner, empty masks, and
    one image with no foreground at all."""
    gen = torch.Generator().manual_seed(0)
    s = torch.zeros(4, 5, *spatial, dtype=torch.bool)
    y = torch.zeros(4, 3, *spatial, dtype=torch.bool)
    s[0, :, :4, 2:9] = torch.rand(s[0, :, :4, 2:9].shape, generator=gen) > 0.3  # image 0: touches the first row
    y[0, :2, 1:5, 3:8] = True
    s[0, 4] = False  # an empty sample
    last = tuple(slice(n - 3, n) for n in spatial)
    s[(1, 2, *last)] = True  # image 1: the far corner only, most masks empty
    y[(1, 0, *last)] = True
    y[(1, 1, *(slice(n - 2, n) for n in spatial))] = True
    s[2, 1:4, 4] = True  # image 2: a slab across every other axis
    y[2, :, 3:5] = True
    # image 3: nothing anywhere (IoU 1, d 0 by convention)
    return s, y


class _CountSpy:
    """Records the pixel count ``P`` and dtype that reach the pairwise products."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pixels: list[int] = []
        self.dtypes: list[torch.dtype] = []
        original = pairwise_module.pairwise_intersection_union

        def spy(a, b, dtype=None):
            inter, union = original(a, b, dtype)
            self.pixels.append(a.shape[-1])
            self.dtypes.append(inter.dtype)
            return inter, union

        monkeypatch.setattr(pairwise_module, "pairwise_intersection_union", spy)
        import monai_car.metrics.generalized_energy_distance as ged_module

        monkeypatch.setattr(ged_module, "pairwise_intersection_union", spy)


def test_crop_keeps_every_foreground_pixel_inside_the_image():
    s, y = _border_masks()
    a, b = crop_to_foreground(s, y)
    assert a.shape[:2] == (4, 5) and b.shape[:2] == (4, 3) and a.shape[2:] == b.shape[2:]
    assert a.shape[2:] == (5, 24)  # the tallest box (image 0, rows 0..4) and the widest (image 2, every column)
    for i in range(4):
        assert int(a[i].sum()) == int(s[i].sum()) and int(b[i].sum()) == int(y[i].sum())


def test_crop_of_an_empty_batch_is_one_background_pixel_and_a_full_window_is_no_copy():
    s, y = torch.zeros(2, 3, 8, 9, dtype=torch.bool), torch.zeros(2, 2, 8, 9, dtype=torch.bool)
    a, b = crop_to_foreground(s, y)
    assert a.shape == (2, 3, 1, 1) and b.shape == (2, 2, 1, 1) and not a.any() and not b.any()
    s[0, 0, 0, 0] = s[1, 1, -1, -1] = True  # opposite corners of two images: a 1x1 window each
    a, b = crop_to_foreground(s, y)
    assert a.shape[2:] == (1, 1) and int(a.sum()) == 2
    s[0, 0, -1, -1] = True  # image 0 spans the whole image: the window is the image
    a, b = crop_to_foreground(s, y)
    assert a is s and b is y


@pytest.mark.parametrize("spatial", [(20, 24), (6, 7, 8)])
def test_ged_and_hm_iou_equal_the_whole_image_loop(monkeypatch, spatial):
    s, y = _border_masks(spatial)
    spy = _CountSpy(monkeypatch)
    cross, ss, yy = compute_ged_terms(s, y.to(torch.uint8))
    ged = compute_generalized_energy_distance(s.float(), y)
    hm = compute_hungarian_matched_iou(s, y)
    assert spy.pixels and max(spy.pixels) < math.prod(spatial)  # the crop did happen
    for i in range(4):
        ref = _ged_loop(s[i].numpy(), y[i].numpy())
        np.testing.assert_allclose([cross[i], ss[i], yy[i]], ref, rtol=1e-6, atol=1e-7)
        assert ged[i].item() == pytest.approx(2 * ref[0] - ref[1] - ref[2], abs=1e-6)
        assert hm[i].item() == pytest.approx(_hm_iou_loop(s[i].numpy(), y[i].numpy()), abs=1e-6)
    assert ged[3].item() == 0.0 and hm[3].item() == 1.0


def test_pairwise_iou_is_bit_identical_to_the_uncropped_counts():
    """Exact integer counts in the window: the IoU matrix equals, bit for bit, the one over the whole image."""
    s, y = _border_masks()
    dtype = pairwise_module.count_dtype(20 * 24)
    full = pairwise_module.iou_from_counts(
        *pairwise_module.pairwise_intersection_union(s.flatten(2), y.flatten(2), dtype)
    )
    assert torch.equal(compute_pairwise_iou(s, y), full)


def test_all_empty_batch_keeps_the_conventions(monkeypatch):
    s, y = torch.zeros(3, 4, 16, 16), torch.zeros(3, 2, 16, 16, dtype=torch.bool)
    spy = _CountSpy(monkeypatch)
    assert torch.equal(compute_generalized_energy_distance(s, y), torch.zeros(3))
    assert torch.equal(compute_hungarian_matched_iou(s, y), torch.ones(3))
    assert torch.equal(compute_pairwise_iou(s, y), torch.ones(3, 4, 2))
    assert set(spy.pixels) == {1}


def test_counts_keep_the_precision_of_the_whole_image(monkeypatch):
    """Above the float32-exact pixel count the counts are float64: cropping below it must not switch precision."""
    s, y = _border_masks()
    expected = compute_ged_terms(s, y)
    monkeypatch.setattr(pairwise_module, "FLOAT32_EXACT_INT", 200)  # whole image 480 px > 200 > window 96 px
    spy = _CountSpy(monkeypatch)
    got = compute_ged_terms(s, y)
    compute_pairwise_iou(s, y)
    assert max(spy.pixels) <= 200 and set(spy.dtypes) == {torch.float64}
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-7)


def _label_maps() -> tuple[torch.Tensor, torch.Tensor]:
    """(3, 4, 16, 18) and (3, 3, 16, 18) label maps in [0, 4): classes 1 and 2 in small blobs (one at a border), class
    3 spread over the whole image, background 0 elsewhere; image 2 has no class 1 or 2."""
    gen = torch.Generator().manual_seed(1)
    s = torch.zeros(3, 4, 16, 18, dtype=torch.long)
    y = torch.zeros(3, 3, 16, 18, dtype=torch.long)
    s[0, :, 3:7, 4:9] = torch.randint(0, 3, (4, 4, 5), generator=gen)
    y[0, :, 4:7, 5:8] = torch.randint(1, 3, (3, 3, 3), generator=gen)
    s[1, 1:, 12:, 15:] = 2  # the far corner
    y[1, 0, 13:, 16:] = 2
    y[1, 2, 9, 10] = 1  # a single pixel
    for t in (s, y):
        t[:, :, ::5, ::7] = 3  # a class outside the compared ones, everywhere
    return s, y


@pytest.mark.parametrize("classes", [None, [1, 2], [2], [0, 1, 2], [1, 2, 3]])
def test_label_map_ged_equals_the_whole_image_loop(monkeypatch, classes):
    s, y = _label_maps()
    spy = _CountSpy(monkeypatch)
    terms = compute_ged_terms(s, y, num_classes=4, classes=classes)
    ids = [1, 2, 3] if classes is None else classes
    if 0 in ids or 3 in ids:  # background compared, or a class all over the image: the whole image is counted
        assert set(spy.pixels) == {16 * 18}
    else:
        assert max(spy.pixels) < 16 * 18
    for i in range(3):
        ref = _ged_loop(s[i].numpy(), y[i].numpy(), ids)
        np.testing.assert_allclose([t[i].item() for t in terms], ref, rtol=1e-6, atol=1e-7)


def test_class_iou_crops_around_the_compared_classes_only(monkeypatch):
    s, y = _label_maps()
    y[0, 0, 0, :] = 255  # a void row outside the window: not compared, so it may be cropped away
    spy = _CountSpy(monkeypatch)
    iou, present = compute_pairwise_class_iou(s, y, classes=[2, 1])
    assert max(spy.pixels) < 16 * 18
    for i in range(3):
        for n in range(4):
            for m in range(3):
                for k, c in enumerate((2, 1)):
                    p, q = s[i, n].numpy() == c, y[i, m].numpy() == c
                    assert iou[i, n, m, k].item() == pytest.approx(_iou(p, q), abs=1e-7)
                    assert bool(present[i, n, m, k]) == bool((p | q).any())
