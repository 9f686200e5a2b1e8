from __future__ import annotations

import math

import pytest
import torch

from monai_car.losses import discriminator_adversarial_loss, generator_adversarial_loss, r1_penalty


def test_nonsaturating_values():
    fake = torch.tensor([[0.0], [math.log(3.0)]])  # D(fake) = 0.5, 0.75
    assert generator_adversarial_loss(fake).item() == pytest.approx((math.log(2) - math.log(0.75)) / 2, rel=1e-6)
    real = torch.tensor([[0.0]])
    # real: -log 0.5; fake: -log(1 - 0.5), -log(1 - 0.75) averaged
    expected = math.log(2) + (math.log(2) + math.log(4)) / 2
    assert discriminator_adversarial_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)


def test_r1_of_linear_discriminator():
    w = torch.tensor([1.0, -2.0, 2.0], requires_grad=True)  # D(x) = w . x, ||grad||^2 = 9
    x = torch.rand(4, 3, requires_grad=True)
    logits = (x * w).sum(1, keepdim=True)
    pen = r1_penalty(logits, x)
    assert pen.item() == pytest.approx(0.5 * 9.0)
    pen.backward()  # create_graph keeps it differentiable w.r.t. D's weights: d(0.5 ||w||^2)/dw = w
    torch.testing.assert_close(w.grad, w.detach())


def test_r1_of_quadratic_discriminator():
    x = torch.tensor([[1.0, 2.0], [0.0, 3.0]], requires_grad=True)
    logits = (x**2).sum(1, keepdim=True)  # grad = 2x
    # 0.5 * mean(4 * (1 + 4), 4 * 9) = 0.5 * (20 + 36) / 2 = 14
    assert r1_penalty(logits, x).item() == pytest.approx(14.0)


def test_r1_needs_grad():
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(torch.zeros(1, 1), torch.zeros(1, 3))
