from __future__ import annotations

import pytest
import torch

from monai_car.networks.nets import CalibrationSegNet, CARNet, RefinementUNet


def _net(spatial_dims=2, noise_dim=4):
    torch.manual_seed(0)
    f = CalibrationSegNet(spatial_dims, 1, 2, channels=(4, 8), convs_per_block=(1, 1))
    g = RefinementUNet(spatial_dims, 3, 2, channels=(4, 8, 8, 8, 8), noise_dim=noise_dim)
    return CARNet(f, g).eval()


@pytest.mark.parametrize("spatial_dims,size", [(2, (32, 32)), (3, (16, 16, 16))])
def test_sample_shape(spatial_dims, size):
    net = _net(spatial_dims)
    x = torch.rand((2, 1) + size)
    with torch.no_grad():
        assert net(x).shape == (2, 2) + size
        s = net.sample(x, 3)
    assert s.shape == (2, 3, 2) + size
    torch.testing.assert_close(s.sum(2), torch.ones_like(s.sum(2)))


def test_sample_reproducible_and_diverse():
    net = _net()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        a = net.sample(x, 5, generator=torch.Generator().manual_seed(7))
        b = net.sample(x, 5, generator=torch.Generator().manual_seed(7))
        c = net.sample(x, 5, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    # the S draws of one image differ from each other
    for i in range(5):
        for j in range(i + 1, 5):
            assert not torch.allclose(a[0, i], a[0, j])


def test_batched_equals_per_sample_loop_and_chunks():
    """The one-pass batch equals G run on each (image, noise) pair alone, and chunking changes nothing (eval mode)."""
    net = _net()
    x = torch.rand(2, 1, 32, 32)
    noise = torch.randn(2, 3, net.noise_dim)
    with torch.no_grad():
        batched = net.sample(x, 3, noise=noise)
        chunked = net.sample(x, 3, noise=noise, chunk_size=4)
        probs = net(x)
        loop = torch.stack(
            [
                torch.stack([net.refine(x[b : b + 1], probs[b : b + 1], noise[b, s : s + 1])[0] for s in range(3)])
                for b in range(2)
            ]
        )
    torch.testing.assert_close(batched, loop, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(chunked, batched, rtol=1e-4, atol=1e-5)


def test_generator_noise_order():
    """Sample s of image b uses noise row b * S + s of the generator's stream."""
    net = _net()
    x = torch.rand(2, 1, 32, 32)
    z = torch.randn((6, net.noise_dim), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = net.sample(x, 3, generator=torch.Generator().manual_seed(3))
        b = net.sample(x, 3, noise=z.reshape(2, 3, -1))
    torch.testing.assert_close(a, b)


def test_gradients_do_not_reach_f_through_g():
    net = _net().train()
    x = torch.rand(1, 1, 32, 32)
    net.sample(x, 2).sum().backward()
    assert all(p.grad is None for p in net.calibration_net.parameters())
    assert any(p.grad is not None for p in net.refinement_net.parameters())


def test_validation():
    net = _net()
    with pytest.raises(ValueError, match="num_samples"):
        net.sample(torch.rand(1, 1, 32, 32), 0)
    with pytest.raises(ValueError, match="noise must have shape"):
        net.sample(torch.rand(1, 1, 32, 32), 2, noise=torch.randn(1, 3, 4))
    with pytest.raises(TypeError, match="noise_dim"):
        CARNet(torch.nn.Identity(), torch.nn.Identity())
