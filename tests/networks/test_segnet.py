from __future__ import annotations

import pytest
import torch

from monai_car.networks.nets import CalibrationSegNet


@pytest.mark.parametrize(
    "spatial_dims,shape", [(2, (2, 1, 32, 48)), (2, (1, 1, 37, 53)), (3, (1, 1, 16, 20, 12)), (3, (1, 2, 9, 17, 11))]
)
def test_output_shape_and_softmax(spatial_dims, shape):
    net = CalibrationSegNet(
        spatial_dims, in_channels=shape[1], out_channels=3, channels=(4, 8, 8), convs_per_block=(1, 2, 2)
    )
    out = net(torch.rand(shape))
    assert out.shape == (shape[0], 3) + shape[2:]
    torch.testing.assert_close(out.sum(1), torch.ones_like(out.sum(1)))
    assert (out >= 0).all()


def test_default_is_vgg16_bn_segnet():
    net = CalibrationSegNet()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    # 13 encoder convs (VGG16), 13 decoder convs (12 mirrored + head)
    assert len(convs) == 26
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 25
    assert convs[0].in_channels == 1 and convs[-1].out_channels == 2


def test_unpooling_reuses_pool_indices():
    """A 1-level SegNet with identity-like convs puts each max back at the position it was pooled from."""
    net = CalibrationSegNet(2, 1, 2, channels=(1,), convs_per_block=(1,))
    h = torch.tensor([[[[0.0, 5.0], [1.0, 2.0]]]])
    pooled, idx = net.pool(h)
    restored = net.unpool(pooled, idx, output_size=h.shape)
    torch.testing.assert_close(restored, torch.tensor([[[[0.0, 5.0], [0.0, 0.0]]]]))


def test_bad_input_raises():
    net = CalibrationSegNet(2, 1, 2, channels=(4,), convs_per_block=(1,))
    with pytest.raises(ValueError, match="expects input of shape"):
        net(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="spatial_dims"):
        CalibrationSegNet(4)
    with pytest.raises(ValueError, match="equal length"):
        CalibrationSegNet(channels=(4, 8), convs_per_block=(1,))


def test_default_activation_lets_f_become_confident():
    """F must be able to say "certainly foreground": a blob present in every target is learned to p > 0.9.

    With ReLU features into the linear head F can get stuck at p <= 0.5 (the head's foreground weights all negative);
    the default LeakyReLU(0.2) keeps negative features usable."""
    torch.manual_seed(0)
    net = CalibrationSegNet(2, 1, 2, channels=(8, 16), convs_per_block=(1, 1))
    assert all(m.negative_slope == 0.2 for m in net.modules() if isinstance(m, torch.nn.LeakyReLU))
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    blob = ((yy - 8) ** 2 + (xx - 8) ** 2 <= 9).float()
    x = (0.1 + 0.6 * blob + 0.05 * torch.randn(4, 1, 16, 16)).clamp(0, 1)
    y = blob.long().expand(4, 16, 16)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net.forward_logits(x), y).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        p = net(x)[:, 1]
    assert p[:, blob.bool()].mean() > 0.9 and p[:, ~blob.bool()].mean() < 0.1
