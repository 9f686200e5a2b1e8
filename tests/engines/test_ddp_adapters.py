"""The DDP adapters without a process group: pass-throughs with the wrapped network's numbers and gradients.

Under a process group they are exercised by tests/engines/test_distributed_training.py (2 gloo processes)."""

from __future__ import annotations

import pytest
import torch

from monai_car.engines import DistributedRefiner, LogitsForward
from monai_car.networks import CalibrationSegNet, CARNet, RefinementUNet


def test_logits_forward_is_the_networks_logits():
    f = CalibrationSegNet(in_channels=1, out_channels=2, channels=(4, 8), convs_per_block=(1, 1)).eval()
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(LogitsForward(f)(x), f.forward_logits(x))
    with pytest.raises(TypeError, match="forward_logits"):
        LogitsForward(torch.nn.Conv2d(1, 2, 1))


def test_distributed_refiner_without_a_group_is_g():
    torch.manual_seed(0)
    g = RefinementUNet(in_channels=3, out_channels=2, channels=(4, 8, 16), noise_dim=4).eval()
    adapter = DistributedRefiner(g, "cpu")
    assert adapter.ddp.net is g and adapter.noise_dim == 4  # no group: not wrapped in DDP
    x, z = torch.rand(2, 3, 16, 16), torch.randn(2, 3, 4)
    assert torch.equal(adapter(x, z[:, 0]), g(x, z[:, 0]))
    assert torch.equal(adapter.forward_multi(x, z, chunk_size=2), g.forward_multi(x, z, chunk_size=2))
    assert adapter.forward_multi_matches_forward() is True
    with adapter.no_sync():  # a null context without a group
        pass
    # CARNet takes the shared path through the adapter: the same samples as through G itself
    f = CalibrationSegNet(in_channels=1, out_channels=2, channels=(4, 8), convs_per_block=(1, 1)).eval()
    image = torch.rand(2, 1, 16, 16)
    via_adapter = CARNet(f, adapter, num_classes=2)
    assert via_adapter._shares_noise_free_work()
    noise = torch.randn(2, 5, 4)
    expected = CARNet(f, g).sample(image, 5, noise=noise)
    assert torch.equal(via_adapter.sample(image, 5, noise=noise), expected)
    # training mode through the adapter: forward_multi still needs the explicit allow_training
    adapter.train()
    assert g.training
    with pytest.raises(RuntimeError, match="allow_training"):
        adapter.forward_multi(x, z)


def test_distributed_refiner_refuses_a_g_without_forward_multi():
    with pytest.raises(TypeError, match="forward_multi"):
        DistributedRefiner(torch.nn.Conv2d(3, 2, 1), "cpu")
