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


# --- ground-truth void (Kohl et al.'s loss_mask): dropped from every pair ------------------------------------------

VOID = 9


def _maps5(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows).reshape(1, len(rows), 1, 5)


def _masked_loop_reference(s, y, w, classes, ignore_index) -> float:
    """The plain-loop GED on the pixels that the ground truth does not mark void (numpy boolean indexing)."""
    keep = ~(y == ignore_index).any(axis=0)
    return _loop_reference(s[:, keep], y[:, keep], w, classes)


def test_void_hand_worked_old_new_and_difference():
    # 1 x 5 maps; pixel 4 is void in the ground truth. Modes A (class 1, w 0.75) and B (its copy 2, w 0.25).
    modes = _maps5([1, 1, 1, 1, VOID], [2, 2, 2, 2, VOID])
    samples = _maps5([1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [2, 2, 2, 2, 2])  # s1 and s3 paint the void pixel
    w = [0.75, 0.25]
    # old (void counted): d(s1,A) = 1 - 4/5, d(s3,B) = 1 - 4/5, d(s2,A) = 0, the rest 1;
    # cross = (0.75 * 0.2 + 0.25 + 0.25 + 0.75 + 0.25 * 0.2) / 3 = 1.45 / 3;
    # samples: d(s1,s2) = 1 - 4/5, d(s1,s3) = d(s2,s3) = 1 -> 2 * 2.2 / 9; modes: 2 * 0.75 * 0.25 = 0.375
    old = 2 * 1.45 / 3 - 4.4 / 9 - 0.375  # = 37/360
    # new (void dropped): s1, s2 match A exactly, s3 matches B: cross = (0.25 + 0.25 + 0.75) / 3;
    # samples: d(s1,s2) = 0, d(s1,s3) = d(s2,s3) = 1 -> 4 / 9; modes unchanged
    new = 2 * 1.25 / 3 - 4 / 9 - 0.375  # = 1/72
    assert old == pytest.approx(37 / 360) and new == pytest.approx(1 / 72)
    got_old = compute_mode_weighted_ged(samples, modes, w, [1, 2])
    got_new = compute_mode_weighted_ged(samples, modes, w, [1, 2], ignore_index=VOID)
    assert got_old.item() == pytest.approx(old, abs=1e-6)
    assert got_new.item() == pytest.approx(new, abs=1e-6)
    assert (got_old - got_new).item() == pytest.approx(4 / 45, abs=1e-6)  # the false positives on void: +0.089
    cross, ss, yy = compute_mode_weighted_ged_terms(samples, modes, w, [1, 2], ignore_index=VOID)
    assert (cross.item(), ss.item(), yy.item()) == pytest.approx((1.25 / 3, 4 / 9, 0.375))


def test_void_in_any_mode_drops_the_pixel_from_every_pair():
    # pixel 1 is void in mode B only: it leaves mode A's pair too (the image's ground truth marks it void)
    modes = _maps5([1, 1, 0, 0, 0], [2, VOID, 0, 0, 0])
    samples = _maps5([1, 2, 0, 0, 0])
    got = compute_mode_weighted_ged(samples, modes, [0.5, 0.5], [1, 2], ignore_index=VOID)
    ref = compute_mode_weighted_ged(samples[..., [0, 2, 3, 4]], modes[..., [0, 2, 3, 4]], [0.5, 0.5], [1, 2])
    torch.testing.assert_close(got, ref)


def test_void_random_against_masked_loop_reference():
    g = torch.Generator().manual_seed(5)
    s = torch.randint(0, 5, (3, 6, 5, 6), generator=g)
    base = torch.randint(0, 5, (3, 1, 5, 6), generator=g)
    y = torch.randint(0, 5, (3, 4, 5, 6), generator=g)
    void = torch.rand(3, 1, 5, 6, generator=g) < 0.3
    y = torch.where(void, VOID, y)  # void on the same pixels of every mode, as for a real ground truth
    s[1] = torch.where(void[1], VOID, s[1])  # samples that also predict void somewhere
    y[2, 0] = torch.where(void[2, 0], VOID, base[2, 0])
    w = torch.rand(3, 4, generator=g)
    classes = [1, 2, 3]
    out = compute_mode_weighted_ged(s, y, w, classes, ignore_index=VOID)
    ref = [
        _masked_loop_reference(s[i].flatten(1).numpy(), y[i].flatten(1).numpy(), w[i].numpy(), classes, VOID)
        for i in range(3)
    ]
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)
    # and the void pixels did change the value (the reference without the mask differs)
    unmasked = [_loop_reference(s[i].numpy(), y[i].numpy(), w[i].numpy(), classes) for i in range(3)]
    assert not np.allclose(ref, unmasked, atol=1e-3)


def test_void_metric_and_invalid_ignore_index():
    modes = _maps5([1, 1, 1, 1, VOID], [2, 2, 2, 2, VOID])
    samples = _maps5([1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [2, 2, 2, 2, 2])
    metric = ModeWeightedGEDMetric(classes=[1, 2], mode_weights=[0.75, 0.25], ignore_index=VOID)
    metric(y_pred=samples, y=modes)
    assert metric.aggregate().item() == pytest.approx(1 / 72, abs=1e-6)
    with pytest.raises(ValueError, match="one of the compared classes"):
        ModeWeightedGEDMetric(classes=[1, 2], ignore_index=2)
    with pytest.raises(ValueError, match="ignore_index must be an int"):
        compute_mode_weighted_ged(samples, modes, [0.5, 0.5], [1, 2], ignore_index=2.5)
    with pytest.raises(ValueError, match="ignore_index must be an int"):
        compute_mode_weighted_ged(samples, modes, [0.5, 0.5], [1, 2], ignore_index=True)
