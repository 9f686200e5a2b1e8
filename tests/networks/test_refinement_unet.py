from __future__ import annotations

import pytest
import torch

from monai_car.networks.blocks import NoiseInjection
from monai_car.networks.nets import RefinementUNet


@pytest.mark.parametrize("spatial_dims,size", [(2, (32, 32)), (2, (37, 50)), (3, (16, 16, 16)), (3, (17, 18, 19))])
def test_shapes(spatial_dims, size):
    net = RefinementUNet(spatial_dims, in_channels=3, out_channels=2, channels=(4, 8, 8, 16, 16), noise_dim=5)
    out = net(torch.rand((2, 3) + size), torch.randn(2, 5))
    assert out.shape == (2, 2) + size
    torch.testing.assert_close(out.sum(1), torch.ones_like(out.sum(1)))


def test_defaults_match_paper():
    net = RefinementUNet()
    assert net.noise_dim == 8
    injections = [m for m in net.modules() if isinstance(m, NoiseInjection)]
    assert [m.channels for m in injections] == [256, 128, 64, 32]  # one per upsampling block
    assert len(net.down) == 4 and len(net.up) == 4
    lrelu = [m for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert lrelu and all(m.negative_slope == 0.2 for m in lrelu)


def test_noise_changes_output_in_eval_mode():
    torch.manual_seed(0)
    net = RefinementUNet(2, 3, 2, channels=(4, 8, 8, 8, 8)).eval()
    x = torch.rand(1, 3, 16, 16)
    a, b = net(x, torch.randn(1, 8)), net(x, torch.randn(1, 8))
    assert not torch.allclose(a, b)
    z = torch.randn(1, 8)
    torch.testing.assert_close(net(x, z), net(x, z))


def test_noise_injection_formula():
    block = NoiseInjection(2, 3)
    with torch.no_grad():
        block.to_scale.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        block.to_scale.bias.zero_()
        block.to_residual.weight.zero_()
        block.to_residual.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    h = torch.ones(1, 3, 2, 2)
    z = torch.tensor([[0.5, -1.0]])
    # s = (0.5, -1, -0.5), r = (1, 2, 3): (1 + r) * (s + 1) = (3, 0, 2)
    expected = torch.tensor([3.0, 0.0, 2.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    torch.testing.assert_close(block(h, z), expected)
    assert torch.equal(NoiseInjection(2, 3, zero_init=True)(h, z), h)


def test_bad_noise_shape():
    net = RefinementUNet(2, 3, 2, channels=(4, 8), noise_dim=4)
    with pytest.raises(ValueError, match="noise z"):
        net(torch.rand(2, 3, 8, 8), torch.randn(2, 5))
