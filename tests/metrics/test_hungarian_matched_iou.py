from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from monai_car.metrics import (
    HungarianMatchedIoUMetric,
    compute_hungarian_matched_iou,
    hungarian_matched_iou_from_matrix,
)


def _masks(*names: str) -> torch.Tensor:
    """(1, N, 4, 4) masks: A top half (8 px), B left half, C top-left quarter (4 px), D bottom half, E empty."""
    out = torch.zeros(1, len(names), 4, 4, dtype=torch.bool)
    for i, n in enumerate(names):
        if n == "A":
            out[0, i, :2, :] = True
        elif n == "B":
            out[0, i, :, :2] = True
        elif n == "C":
            out[0, i, :2, :2] = True
        elif n == "D":
            out[0, i, 2:, :] = True
    return out


def _loop_hm_iou(s: np.ndarray, y: np.ndarray) -> float:
    """Reference: explicitly duplicated sets (labels repeated element-wise, not tiled), per-pair numpy IoU, scipy."""

    def iou(p, q):
        union = np.logical_or(p, q).sum()
        return 1.0 if union == 0 else np.logical_and(p, q).sum() / union

    size = math.lcm(len(s), len(y))
    samples = [m for m in s for _ in range(size // len(s))]
    labels = [m for m in y for _ in range(size // len(y))]
    scores = np.array([[iou(a, b) for b in labels] for a in samples])
    rows, cols = linear_sum_assignment(-scores)
    return float(scores[rows, cols].mean())


@pytest.mark.parametrize(
    "samples, labels, expected",
    [
        (("A", "B", "E", "C"), ("A", "B", "E", "C"), 1.0),  # identical sets
        (("A", "A"), ("D", "D"), 0.0),  # disjoint masks
        (("E", "E", "E"), ("E", "E"), 1.0),  # all empty: IoU 1 by convention
        (("A", "E"), ("A", "E"), 1.0),  # mixed empty, matched
        (("A", "E"), ("E", "E"), 0.5),  # one sample must take an empty label: IoU 0
        # S=3, R=2 -> both sets grow to 6: two A's take two A labels (1 + 1), two B's two C labels (0.5 + 0.5),
        # the two E's get the remaining A and C labels (0 + 0): total 3 over 6 pairs
        (("A", "B", "E"), ("A", "C"), 0.5),
    ],
)
def test_hand_computed_cases(samples, labels, expected):
    assert compute_hungarian_matched_iou(_masks(*samples), _masks(*labels)).item() == pytest.approx(expected)


@pytest.mark.parametrize("num_samples, num_labels", [(4, 4), (3, 2), (16, 4), (2, 3), (6, 4)])
def test_random_against_loop_reference(num_samples, num_labels):
    g = torch.Generator().manual_seed(num_samples * 10 + num_labels)
    s = torch.rand(3, num_samples, 5, 6, generator=g) < torch.rand(3, num_samples, 1, 1, generator=g)
    y = torch.rand(3, num_labels, 5, 6, generator=g) < 0.5
    s[0, 0] = False
    y[1, 0] = False
    y[2] = False
    out = compute_hungarian_matched_iou(s.float(), y)
    ref = [_loop_hm_iou(s[i].numpy(), y[i].numpy()) for i in range(3)]
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5)
    assert out.dtype == torch.float32 and out.shape == (3,)


def test_from_matrix_checks():
    torch.testing.assert_close(hungarian_matched_iou_from_matrix(torch.eye(3)[None]), torch.ones(1))
    with pytest.raises(ValueError, match=r"\(B, S, R\)"):
        hungarian_matched_iou_from_matrix(torch.eye(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        hungarian_matched_iou_from_matrix(torch.full((1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="binary mask"):
        compute_hungarian_matched_iou(_masks("A").float() * 0.5, _masks("A"))
    with pytest.raises(ValueError, match="batch sizes differ"):
        compute_hungarian_matched_iou(torch.cat([_masks("A"), _masks("B")]), _masks("A"))


def test_metric_accumulates_and_accepts_probabilities():
    g = torch.Generator().manual_seed(5)
    s1, y1 = torch.rand(2, 4, 6, 6, generator=g) < 0.4, torch.rand(2, 2, 6, 6, generator=g) < 0.4
    s2, y2 = torch.rand(3, 4, 6, 6, generator=g) < 0.4, torch.rand(3, 2, 6, 6, generator=g) < 0.4
    per_image = torch.cat([compute_hungarian_matched_iou(s1, y1), compute_hungarian_matched_iou(s2, y2)])
    metric = HungarianMatchedIoUMetric()
    metric(y_pred=s1, y=y1)
    metric(y_pred=list(s2), y=list(y2))
    torch.testing.assert_close(metric.aggregate(), per_image.mean())
    torch.testing.assert_close(metric.aggregate("none"), per_image)
    metric.reset()
    fg = torch.where(s2, 0.7, 0.2)
    prob_metric = HungarianMatchedIoUMetric(from_probabilities=True)
    prob_metric(y_pred=torch.stack([1 - fg, fg], dim=2), y=y2)
    torch.testing.assert_close(prob_metric.aggregate(), per_image[2:].mean())
    with pytest.raises(ValueError, match="required"):
        HungarianMatchedIoUMetric()(y_pred=s1)
