from __future__ import annotations

import pytest
import torch

from monai_car.networks.nets import CARDiscriminator


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (128, 128)])
def test_any_input_size_gives_one_logit(size):
    d = CARDiscriminator(2, in_channels=3, channels=(8, 16, 16, 32))
    assert d(torch.rand((2, 3) + size)).shape == (2, 1)


def test_patch_and_3d():
    d = CARDiscriminator(2, 3, channels=(8, 16), patch=True)
    assert d(torch.rand(1, 3, 32, 32)).shape == (1, 1, 8, 8)
    d3 = CARDiscriminator(3, 3, channels=(4, 8))
    assert d3(torch.rand(2, 3, 16, 16, 8)).shape == (2, 1)


def test_no_batch_norm_and_image_logit_is_patch_mean():
    d = CARDiscriminator(2, 3, channels=(8, 16))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in d.modules())
    x = torch.rand(2, 3, 32, 32)
    d.patch = True
    patch = d(x)
    d.patch = False
    torch.testing.assert_close(d(x), patch.mean(dim=(2, 3)).reshape(2, 1))


def test_too_small_input():
    with pytest.raises(ValueError, match="spatial size"):
        CARDiscriminator(2, 3, channels=(8, 16, 32))(torch.rand(1, 3, 4, 4))
