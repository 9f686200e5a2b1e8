from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_car.metrics import (
    ModeWeightedGEDMetric,
    compute_generalized_energy_distance,
    compute_mode_weighted_ged,
    compute_mode_weighted_ged_terms,
)

# 1 x 4 label maps; classes 1 and 2 are "switchable" (2 is the flipped copy of 1), 0 is background
MODE_A = [1, 1, 0, 0]  # the original class
MODE_B = [2, 2, 0, 0]  # the flipped class
NONE = [0, 0, 0, 0]  # none of the switchable classes


def _maps(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows).reshape(1, len(rows), 1, 4)


def _loop_reference(s: np.ndarray, y: np.ndarray, w: np.ndarray, classes: list[int]) -> float:
    """Plain loops: d = 1 - mean IoU over the classes present in a pair; pairs with none present left out."""

    def d(p, q):
        ious = []
        for c in classes:
            union = np.logical_or(p == c, q == c).sum()
            if union:
                ious.append(np.logical_and(p == c, q == c).sum() / union)
        return None if not ious else 1.0 - np.mean(ious)

    def expectation(xs, wx, ys, wy):
        num = den = 0.0
        for a, wa in zip(xs, wx):
            for b, wb in zip(ys, wy):
                dist = d(a, b)
                if dist is not None:
                    num += wa * wb * dist
                    den += wa * wb
        return num / den if den > 0 else 0.0

    ones = np.ones(len(s))
    return 2 * expectation(s, ones, y, w) - expectation(s, ones, s, ones) - expectation(y, w, y, w)


def test_two_mode_case_by_hand():
    samples = _maps(MODE_A, MODE_A, MODE_B, NONE)
    modes = _maps(MODE_A, MODE_B)
    weights = torch.tensor([0.75, 0.25])
    cross, ss, yy = compute_mode_weighted_ged_terms(samples, modes, weights, classes=[1, 2])
    # cross: d(A,B) = 1, d(A,A) = 0; the NONE sample vs either mode keeps the pair (a class is present) with d = 1:
    # sum w d = 0.25 + 0.25 + 0.75 + (0.75 + 0.25) = 2.25 over total weight 4
    assert cross.item() == pytest.approx(2.25 / 4)
    # samples: the (NONE, NONE) pair is left out -> 15 pairs kept; d = 1 for A-B (4 ordered), A-NONE (4), B-NONE (2)
    assert ss.item() == pytest.approx(10 / 15)
    # modes: 2 * w_A * w_B * 1 = 0.375 over total weight 1
    assert yy.item() == pytest.approx(0.375)
    ged = compute_mode_weighted_ged(samples, modes, weights, classes=[1, 2])
    assert ged.item() == pytest.approx(2 * 2.25 / 4 - 10 / 15 - 0.375)  # 1/12


def test_classes_absent_from_both_maps_are_skipped():
    a, b = _maps([1, 2, 0, 0]), _maps([1, 0, 0, 0])
    # class 1 IoU 1, class 2 (only in a) IoU 0, class 3 absent from both: skipped -> d = 1 - 0.5
    cross, _, _ = compute_mode_weighted_ged_terms(a, b, [1.0], classes=[1, 2, 3])
    assert cross.item() == pytest.approx(0.5)
    # the LIDC-style label-map GED counts the absent class as agreement instead: d = 1 - (1 + 0 + 1) / 3
    lidc = compute_generalized_energy_distance(a, b, num_classes=4, classes=[1, 2, 3])
    assert lidc.item() == pytest.approx(2 * (1 / 3))


def test_terms_with_every_pair_left_out_are_zero():
    cross, ss, yy = compute_mode_weighted_ged_terms(_maps(NONE, NONE), _maps(NONE, [0, 3, 3, 0]), [0.5, 0.5], [1, 2])
    assert cross.item() == ss.item() == yy.item() == 0.0  # no NaN
    # samples without any class: their term is 0, while the cross pairs are kept (d = 1)
    cross, ss, yy = compute_mode_weighted_ged_terms(_maps(NONE, NONE), _maps(MODE_A, MODE_B), [0.5, 0.5], [1, 2])
    assert (cross.item(), ss.item(), yy.item()) == (1.0, 0.0, 0.5)


def test_weights_are_renormalised_and_broadcast():
    samples, modes = _maps(MODE_A, MODE_B, NONE), _maps(MODE_A, MODE_B, [1, 2, 0, 0])
    w = torch.tensor([0.5, 0.3, 0.2])
    ref = compute_mode_weighted_ged(samples, modes, w, [1, 2])
    torch.testing.assert_close(compute_mode_weighted_ged(samples, modes, 10 * w, [1, 2]), ref)
    torch.testing.assert_close(compute_mode_weighted_ged(samples, modes, w[None], [1, 2]), ref)
    torch.testing.assert_close(compute_mode_weighted_ged(samples, modes, [0.5, 0.3, 0.2], [1, 2]), ref)
    # a zero-weight mode counts for nothing
    torch.testing.assert_close(
        compute_mode_weighted_ged(samples, modes, [0.5, 0.5, 0.0], [1, 2]),
        compute_mode_weighted_ged(samples, modes[:, :2], [0.5, 0.5], [1, 2]),
    )


def test_random_against_loop_reference():
    g = torch.Generator().manual_seed(11)
    s = torch.randint(0, 5, (2, 5, 4, 5), generator=g)
    y = torch.randint(0, 5, (2, 4, 4, 5), generator=g)
    s[0, :2] = 0  # samples without any of the classes
    y[1, 0] = 4  # a mode made only of an uncompared class
    w = torch.rand(2, 4, generator=g)
    classes = [1, 2, 3]
    out = compute_mode_weighted_ged(s, y, w, classes)
    ref = [_loop_reference(s[i].numpy(), y[i].numpy(), w[i].numpy(), classes) for i in range(2)]
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_invalid_inputs():
    s, y = _maps(MODE_A), _maps(MODE_A, MODE_B)
    for weights, match in (
        ([0.5], r"\(N,\) or \(B, N\)"),
        ([-0.5, 1.5], "non-negative"),
        ([0.0, 0.0], "positive sum"),
        ([float("nan"), 1.0], "finite"),
        ("ab", "sequence of numbers"),
        (torch.tensor([True, False]), "real numbers"),
    ):
        with pytest.raises(ValueError, match=match):
            compute_mode_weighted_ged(s, y, weights, [1, 2])
    with pytest.raises(ValueError, match="non-empty sequence"):
        compute_mode_weighted_ged(s, y, [0.5, 0.5], [])
    with pytest.raises(ValueError, match="non-integral"):
        compute_mode_weighted_ged(s + 0.5, y, [0.5, 0.5], [1])
    with pytest.raises(ValueError, match="spatial"):
        compute_mode_weighted_ged(s[..., :3], y, [0.5, 0.5], [1])


def test_metric_accumulates():
    g = torch.Generator().manual_seed(2)
    s1, y1 = torch.randint(0, 4, (2, 5, 3, 4), generator=g), torch.randint(0, 4, (2, 4, 3, 4), generator=g)
    s2, y2 = torch.randint(0, 4, (1, 5, 3, 4), generator=g), torch.randint(0, 4, (1, 4, 3, 4), generator=g)
    w = torch.tensor([0.4, 0.3, 0.2, 0.1])
    per_image = torch.cat([compute_mode_weighted_ged(s1, y1, w, [1, 2]), compute_mode_weighted_ged(s2, y2, w, [1, 2])])
    metric = ModeWeightedGEDMetric(classes=[1, 2], mode_weights=w)
    metric(y_pred=s1, y=y1)
    metric(y_pred=s2, y=y2, mode_weights=w[None])  # per-call (B, N) weights override the default
    torch.testing.assert_close(metric.aggregate(), per_image.mean())
    listed = ModeWeightedGEDMetric(classes=(np.int64(1), 2), mode_weights=w)  # list input: (N,) weights shared
    listed(y_pred=list(s1), y=list(y1))
    torch.testing.assert_close(listed.aggregate("none"), per_image[:2])
    terms = metric.aggregate_terms()
    torch.testing.assert_close(terms["ged"], 2 * terms["cross"] - terms["samples"] - terms["modes"])
    probs = torch.nn.functional.one_hot(s1, 4).movedim(-1, 2).float()  # (B, S, K, H, W)
    prob_metric = ModeWeightedGEDMetric(classes=[1, 2], from_probabilities=True)
    torch.testing.assert_close(prob_metric(y_pred=probs, y=y1, mode_weights=w), per_image[:2])
    with pytest.raises(ValueError, match="mode_weights is required"):
        ModeWeightedGEDMetric(classes=[1, 2])(y_pred=s1, y=y1)
    with pytest.raises(ValueError, match="unexpected keyword"):
        metric(y_pred=s1, y=y1, weights=w)
