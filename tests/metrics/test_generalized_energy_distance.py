from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_car.metrics import GeneralizedEnergyDistanceMetric, compute_ged_terms, compute_generalized_energy_distance


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


def _loop_ged(s: np.ndarray, y: np.ndarray) -> float:
    """Reference: plain per-pair loops, d = 1 - IoU, d = 0 for two empty masks, V-statistic."""

    def d(p, q):
        union = np.logical_or(p, q).sum()
        return 0.0 if union == 0 else 1.0 - np.logical_and(p, q).sum() / union

    cross = np.mean([d(a, b) for a in s for b in y])
    ss = np.mean([d(a, b) for a in s for b in s])
    yy = np.mean([d(a, b) for a in y for b in y])
    return 2 * cross - ss - yy


def test_identical_sets_give_zero():
    s = _masks("A", "B", "E", "C")
    torch.testing.assert_close(compute_generalized_energy_distance(s, s), torch.zeros(1))


def test_disjoint_masks():
    cross, ss, yy = compute_ged_terms(_masks("A"), _masks("D"))
    assert (cross.item(), ss.item(), yy.item()) == (1.0, 0.0, 0.0)
    assert compute_generalized_energy_distance(_masks("A", "A"), _masks("D")).item() == 2.0


def test_all_empty_is_zero():
    cross, ss, yy = compute_ged_terms(_masks("E", "E", "E"), _masks("E", "E"))
    assert cross.item() == ss.item() == yy.item() == 0.0


def test_mixed_empty_by_hand():
    # cross = (d(A,A) + d(E,A)) / 2 = 0.5; samples: off-diagonal pairs (A,E), (E,A) -> 2/4; labels 0
    cross, ss, yy = compute_ged_terms(_masks("A", "E"), _masks("A"))
    torch.testing.assert_close(torch.stack([cross, ss, yy]).flatten(), torch.tensor([0.5, 0.5, 0.0]))
    assert compute_generalized_energy_distance(_masks("A", "E"), _masks("A")).item() == pytest.approx(0.5)


def test_three_samples_two_labels_by_hand():
    # IoU(A,B) = 1/3, IoU(A,C) = IoU(B,C) = 1/2; E empty
    cross, ss, yy = compute_ged_terms(_masks("A", "B", "E"), _masks("A", "C"))
    assert cross.item() == pytest.approx((0 + 0.5 + 2 / 3 + 0.5 + 1 + 1) / 6)  # 11/18
    assert ss.item() == pytest.approx((2 * 2 / 3 + 2 + 2) / 9)  # 16/27
    assert yy.item() == pytest.approx(0.25)
    ged = compute_generalized_energy_distance(_masks("A", "B", "E"), _masks("A", "C"))
    assert ged.item() == pytest.approx(41 / 108)


def test_random_against_loop_reference():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(3, 6, 5, 7, generator=g) < torch.rand(3, 6, 1, 1, generator=g)
    y = torch.rand(3, 4, 5, 7, generator=g) < 0.4
    s[0, :3] = False  # some empty samples
    y[1, 1:] = False  # some empty labels
    y[2] = False  # an image with no lesion in any label
    ged = compute_generalized_energy_distance(s, y.to(torch.uint8))
    ref = [_loop_ged(s[i].numpy(), y[i].numpy()) for i in range(3)]
    np.testing.assert_allclose(ged.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_label_maps_average_over_classes():
    pred = torch.tensor([1, 1, 2, 0]).reshape(1, 1, 1, 4)
    lab = torch.tensor([1, 1, 2, 2]).reshape(1, 1, 1, 4)
    # class 1: IoU 1 -> d 0; class 2: IoU 1/2 -> d 1/2; GED = 2 * cross since both sets are singletons
    assert compute_generalized_energy_distance(pred, lab, num_classes=3).item() == pytest.approx(0.5)
    assert compute_generalized_energy_distance(pred, lab, num_classes=3, classes=[2]).item() == pytest.approx(1.0)
    assert compute_generalized_energy_distance(pred, lab, num_classes=3, classes=[1]).item() == pytest.approx(0.0)
    # a class absent from both maps counts as d_c = 0 (not skipped): mean over 3 classes
    assert compute_generalized_energy_distance(pred, lab, num_classes=4).item() == pytest.approx(1 / 3)
    # binary masks as 2-class label maps give the binary GED
    s, y = _masks("A", "B", "E"), _masks("A", "C")
    torch.testing.assert_close(
        compute_generalized_energy_distance(s.long(), y.long(), num_classes=2),
        compute_generalized_energy_distance(s, y),
    )


def test_sampling_the_true_distribution_beats_a_collapsed_model():
    """Property: samples from the graders' distribution give a small GED, a collapsed model a large one."""
    g = torch.Generator().manual_seed(3)
    graders = torch.zeros(4, 4, 16, 16, dtype=torch.bool)  # 4 images, 4 distinct plausible shapes each
    for i in range(4):
        for r in range(4):
            x0, y0 = torch.randint(2, 6, (2,), generator=g).tolist()
            size = 3 + 2 * r
            graders[i, r, y0 : y0 + size, x0 : x0 + size] = True
        graders[i, 0] = False  # one grader sees no lesion
    draws = torch.randint(0, 4, (4, 100), generator=g)
    faithful = torch.stack([graders[i, draws[i]] for i in range(4)])  # 100 samples from the graders' distribution
    collapsed = graders[:, 2:3].expand(-1, 100, -1, -1)  # always the same (plausible) mask
    ged_faithful = compute_generalized_energy_distance(faithful, graders)
    ged_collapsed = compute_generalized_energy_distance(collapsed, graders)
    assert (ged_faithful < 0.05).all() and (ged_faithful < 0.2 * ged_collapsed).all()
    # exactly the graders' empirical distribution (each grader 25 times): the V-statistic GED is exactly 0
    torch.testing.assert_close(
        compute_generalized_energy_distance(graders.repeat(1, 25, 1, 1), graders), torch.zeros(4)
    )
    assert (ged_collapsed > 0.3).all()


def test_invalid_arguments():
    s = _masks("A", "B")
    with pytest.raises(ValueError, match="set num_classes"):
        compute_ged_terms(s, s, classes=[1])
    with pytest.raises(ValueError, match="binary mask"):
        compute_generalized_energy_distance(s.long() * 2, s)
    with pytest.raises(ValueError, match="labels in"):
        compute_generalized_energy_distance(s.long() * 3, s.long(), num_classes=3)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        compute_generalized_energy_distance(s.long(), s.long(), num_classes=1)
    with pytest.raises(ValueError, match="batch sizes differ"):
        compute_generalized_energy_distance(torch.cat([s, s]), s)
    with pytest.raises(ValueError, match="spatial"):
        compute_generalized_energy_distance(s, s[..., :3])


def _two_batches():
    g = torch.Generator().manual_seed(7)
    s1, y1 = torch.rand(2, 5, 6, 6, generator=g) < 0.4, torch.rand(2, 3, 6, 6, generator=g) < 0.4
    s2, y2 = torch.rand(3, 5, 6, 6, generator=g) < 0.4, torch.rand(3, 3, 6, 6, generator=g) < 0.4
    return s1, y1, s2, y2


def test_metric_accumulates_and_resets():
    s1, y1, s2, y2 = _two_batches()
    per_image = torch.cat([compute_generalized_energy_distance(s1, y1), compute_generalized_energy_distance(s2, y2)])
    metric = GeneralizedEnergyDistanceMetric()
    out = metric(y_pred=s1, y=y1)
    assert out.shape == (2,)
    metric(y_pred=list(s2), y=list(y2))  # decollated channel-first list
    torch.testing.assert_close(metric.aggregate(), per_image.mean())
    torch.testing.assert_close(metric.aggregate("none"), per_image)
    terms = metric.aggregate_terms()
    torch.testing.assert_close(terms["ged"], 2 * terms["cross"] - terms["samples"] - terms["labels"])
    metric.reset()
    with pytest.raises(ValueError, match="no data"):
        metric.aggregate()
    metric(y_pred=s2, y=y2)
    torch.testing.assert_close(metric.aggregate(), per_image[2:].mean())
    counted = GeneralizedEnergyDistanceMetric(get_not_nans=True)
    counted(y_pred=s1, y=y1)
    value, not_nans = counted.aggregate()
    assert not_nans.item() == 2 and value.item() == pytest.approx(per_image[:2].mean().item())


def test_metric_from_probabilities():
    s1, y1, _, _ = _two_batches()
    expected = compute_generalized_energy_distance(s1, y1)
    fg = torch.where(s1, 0.8, 0.1)
    two_channel = torch.stack([1 - fg, fg], dim=2)  # (B, S, 2, H, W)
    for probs in (two_channel, fg[:, :, None]):
        metric = GeneralizedEnergyDistanceMetric(from_probabilities=True)
        torch.testing.assert_close(metric(y_pred=probs, y=y1), expected)
    with pytest.raises(ValueError, match="binary foreground masks"):
        GeneralizedEnergyDistanceMetric(from_probabilities=True)(y_pred=torch.rand(2, 5, 3, 6, 6), y=y1)
    labels3 = torch.randint(0, 3, (2, 3, 6, 6))
    probs3 = torch.softmax(torch.randn(2, 5, 3, 6, 6), dim=2)
    metric = GeneralizedEnergyDistanceMetric(num_classes=3, from_probabilities=True)
    expected3 = compute_generalized_energy_distance(probs3.argmax(2), labels3, num_classes=3)
    torch.testing.assert_close(metric(y_pred=probs3, y=labels3), expected3)
    with pytest.raises(ValueError, match="num_classes=4"):
        GeneralizedEnergyDistanceMetric(num_classes=4, from_probabilities=True)(y_pred=probs3, y=labels3)
