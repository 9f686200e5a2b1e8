from __future__ import annotations

import pytest
import torch

from monai_car.networks.nets import CalibrationConvNet


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shape_and_blocks(spatial_dims):
    net = CalibrationConvNet(spatial_dims, in_channels=5, out_channels=4, hidden_channels=8)
    x = torch.rand((2, 5) + (12,) * spatial_dims)
    out = net(x)
    assert out.shape == (2, 4) + (12,) * spatial_dims
    torch.testing.assert_close(out.sum(1), torch.ones_like(out.sum(1)))
    conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
    convs = [m for m in net.modules() if isinstance(m, conv)]
    assert [c.kernel_size[0] for c in convs] == [3, 3, 3, 3, 3, 1]
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.1 for m in net.modules()) == 5


def test_logits_and_probs_agree():
    net = CalibrationConvNet(2, 3, 2, hidden_channels=4).eval()
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(torch.softmax(net.forward_logits(x), 1), net(x))
