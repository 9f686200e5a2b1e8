from __future__ import annotations

import math

import pytest
import torch

from monai_car.losses import MaskedCrossEntropyLoss, sharpening_loss


def test_by_hand_and_mask():
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 1, 0, 0] = math.log(3.0)  # pixel 0: p = (0.25, 0.75)
    target = torch.tensor([[[1, 0]]])
    nll0, nll1 = -math.log(0.75), -math.log(0.5)
    loss = MaskedCrossEntropyLoss()
    assert loss(logits, target).item() == pytest.approx((nll0 + nll1) / 2, rel=1e-6)
    mask = torch.tensor([[[True, False]]])
    assert loss(logits, target, mask).item() == pytest.approx(nll0, rel=1e-6)  # divides by 1 valid pixel, not 2
    assert loss(logits, target.unsqueeze(1).float(), mask.unsqueeze(1)).item() == pytest.approx(nll0, rel=1e-6)


def test_ignore_index_and_probs():
    probs = torch.tensor([0.2, 0.8]).reshape(1, 2, 1, 1).repeat(1, 1, 1, 2)
    target = torch.tensor([[[1, 255]]])
    loss = MaskedCrossEntropyLoss(ignore_index=255, input_is_probs=True)
    assert loss(probs, target).item() == pytest.approx(-math.log(0.8), rel=1e-6)


def test_matches_torch_without_mask():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 5, 5), torch.randint(0, 3, (2, 5, 5))
    torch.testing.assert_close(
        MaskedCrossEntropyLoss()(logits, target), torch.nn.functional.cross_entropy(logits, target)
    )


def test_errors():
    with pytest.raises(ValueError, match="outside"):
        MaskedCrossEntropyLoss()(torch.randn(1, 2, 2, 2), torch.full((1, 2, 2), 2))
    with pytest.raises(ValueError, match="integer"):
        MaskedCrossEntropyLoss()(torch.randn(1, 2, 2, 2), torch.full((1, 2, 2), 0.5))


def test_sharpening_loss_by_hand():
    s = torch.zeros(1, 2, 2, 1, 2)  # (B, M, K, H, W)
    s[0, 0, :, 0, 0] = torch.tensor([0.9, 0.1])
    s[0, 1, :, 0, 0] = torch.tensor([0.4, 0.6])
    s[0, :, :, 0, 1] = torch.tensor([0.5, 0.5])
    by_hand = -(math.log(0.9) + math.log(0.6) + 2 * math.log(0.5)) / 4
    assert sharpening_loss(s, None).item() == pytest.approx(by_hand, rel=1e-6)
    valid = torch.tensor([[[[True, False]]]])  # (B, 1, H, W): the second pixel is void
    assert sharpening_loss(s, valid).item() == pytest.approx(-(math.log(0.9) + math.log(0.6)) / 2, rel=1e-6)
    one_hot = torch.zeros(1, 2, 2, 1, 2)
    one_hot[:, :, 0] = 1.0
    assert sharpening_loss(one_hot, None).item() == 0.0
    with pytest.raises(ValueError, match="samples must be"):
        sharpening_loss(torch.rand(2, 3, 4))
