from __future__ import annotations

import math

import pytest
import torch

from monai_car.losses import calibrated_sharpening_loss, calibrated_sharpening_targets, sharpening_loss


def _pixel(rows: list[list[float]]) -> torch.Tensor:
    """(1, M, K, 1, 1) probabilities from M rows of K."""
    return torch.tensor(rows).reshape(1, len(rows), len(rows[0]), 1, 1)


def test_symmetric_case_by_hand():
    # two mirror samples and F = (0.5, 0.5): the columns are balanced from the start, so the target is each sample's
    # probabilities raised to 1 / epsilon and renormalised: (0.81, 0.01) / 0.82
    samples = _pixel([[0.9, 0.1], [0.1, 0.9]])
    target = torch.full((1, 2, 1, 1), 0.5)
    goal = calibrated_sharpening_targets(samples, target, epsilon=0.5, iterations=3)[0, :, :, 0, 0]
    hi, lo = 0.81 / 0.82, 0.01 / 0.82
    torch.testing.assert_close(goal, torch.tensor([[hi, lo], [lo, hi]]))


def test_calibrated_samples_that_agree_are_left_alone():
    # M identical samples equal to F: the only transport plan with equal rows puts F / M in every row -> target = p,
    # and the cross entropy's gradient on the logits (p - target) vanishes
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1])).reshape(1, 1, 3, 1, 1).repeat(1, 5, 1, 2, 2).requires_grad_(True)
    samples = torch.softmax(logits, dim=2)
    target = samples[:, 0].detach()
    goal = calibrated_sharpening_targets(samples, target, epsilon=0.1, iterations=4)
    torch.testing.assert_close(goal, samples.detach())
    calibrated_sharpening_loss(samples, target).backward()
    assert logits.grad.abs().max().item() < 1e-6


def test_shares_match_target_where_argmax_sharpening_drops_the_minority():
    # every sample is soft (about 0.7 / 0.3) with small differences between them; F says 30 % for class 1
    gen = torch.Generator().manual_seed(0)
    logits = 0.2 * torch.randn(1, 20, 2, 3, 3, generator=gen)
    logits[:, :, 0] += math.log(0.7 / 0.3)
    samples = torch.softmax(logits, dim=2)
    target = torch.tensor([0.7, 0.3]).reshape(1, 2, 1, 1).expand(1, 2, 3, 3)
    goal = calibrated_sharpening_targets(samples, target, epsilon=0.1, iterations=50)
    torch.testing.assert_close(goal.sum(dim=2), torch.ones(1, 20, 3, 3))
    torch.testing.assert_close(goal.mean(dim=1), target, atol=1e-3, rtol=0)  # the class shares are F's

    # sharper than the samples (mean entropy 0.60 -> 0.37 nats here), and the samples leaning most to class 1 are
    # the ones assigned to it
    def entropy(p):
        return -(p * p.clamp_min(1e-12).log()).sum(dim=2).mean().item()

    assert entropy(goal) < 0.7 * entropy(samples)
    # argmax sharpening would pull all but a few samples to class 0
    assert (samples.argmax(dim=2) == 1).float().mean().item() < 0.05
    order = samples[0, :, 1, 0, 0].argsort(descending=True)
    ranked = goal[0, order, 1, 0, 0]
    assert (ranked[:-1] >= ranked[1:]).all()  # the class-1 target grows with the sample's own class-1 probability
    assert ranked[:4].min().item() > 0.5 and ranked[12:].max().item() < 0.2


def test_loss_by_hand_and_mask():
    samples = torch.cat([_pixel([[0.9, 0.1], [0.1, 0.9]]), _pixel([[0.6, 0.4], [0.6, 0.4]])], dim=4)  # 2 pixels
    target = torch.tensor([[0.5, 0.6], [0.5, 0.4]]).reshape(1, 2, 1, 2)
    # pixel 0 (targets by hand, epsilon 0.5): -(hi log 0.9 + lo log 0.1) for each sample
    hi, lo = 0.81 / 0.82, 0.01 / 0.82
    ce0 = -(hi * math.log(0.9) + lo * math.log(0.1))
    valid = torch.tensor([True, False]).reshape(1, 1, 1, 2)
    got = calibrated_sharpening_loss(samples, target, valid, epsilon=0.5, iterations=3)
    assert got.item() == pytest.approx(ce0, rel=1e-5)
    # pixel 1: samples equal to F -> target = p, the loss is the samples' entropy
    ce1 = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    both = calibrated_sharpening_loss(samples, target, epsilon=0.5, iterations=3)
    assert both.item() == pytest.approx((ce0 + ce1) / 2, rel=1e-5)
    # with hard argmax targets (the other sharpening) pixel 1 would cost -log 0.6 instead
    assert sharpening_loss(samples[..., 1:]).item() == pytest.approx(-math.log(0.6), rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"samples": torch.rand(2, 3, 4)}, "samples must be"),
        ({"target": torch.rand(1, 3, 2, 2)}, "target"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": 1.5}, "epsilon"),
        ({"iterations": 0}, "iterations"),
        ({"iterations": 2.0}, "iterations"),
    ],
)
def test_invalid_inputs(kwargs, match):
    args = {"samples": torch.rand(1, 3, 2, 2, 2), "target": torch.rand(1, 2, 2, 2)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        calibrated_sharpening_targets(**args)
