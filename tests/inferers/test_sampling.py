"""CARSamplingInferer: a MONAI inferer drawing G's samples of a CARNet."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

from monai_car.inferers import SAMPLING_OUTPUTS, CARSamplingInferer
from monai_car.networks.nets import CalibrationSegNet, CARNet, RefinementUNet


def _net() -> CARNet:
    torch.manual_seed(0)
    f = CalibrationSegNet(2, 1, 2, channels=(4, 8), convs_per_block=(1, 1))
    g = RefinementUNet(2, 3, 2, channels=(4, 8, 16), noise_dim=4)
    return CARNet(f, g).eval()


def test_outputs_and_shapes():
    net, x = _net(), torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        mean = CARSamplingInferer(5, seed=3)(x, net)
        samples = CARSamplingInferer(5, output="samples", seed=3)(x, net)
        calibration = CARSamplingInferer(output="calibration")(x, net)
        expected = net.sample(x, 5, generator=torch.Generator().manual_seed(3))
    assert isinstance(CARSamplingInferer(), Inferer) and set(SAMPLING_OUTPUTS) == {
        "sample_mean",
        "samples",
        "calibration",
    }
    assert mean.shape == (2, 2, 32, 32) and samples.shape == (2, 5, 2, 32, 32)
    torch.testing.assert_close(samples, expected)
    torch.testing.assert_close(mean, expected.mean(1))
    torch.testing.assert_close(calibration, net(x))
    torch.testing.assert_close(mean.sum(1), torch.ones(2, 32, 32))


def test_seeded_calls_repeat_and_unseeded_calls_differ():
    net, x = _net(), torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        a, b = CARSamplingInferer(4, seed=0)(x, net), CARSamplingInferer(4, seed=0)(x, net)
        c, d = CARSamplingInferer(4, seed=None)(x, net), CARSamplingInferer(4, seed=None)(x, net)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(c, d)


def test_metadata_is_carried_over():
    net = _net()
    x = MetaTensor(torch.rand(1, 1, 32, 32), meta={"filename_or_obj": "crop.nii.gz"})
    with torch.no_grad():
        out = CARSamplingInferer(2)(x, net)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "crop.nii.gz"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="num_samples"):
        CARSamplingInferer(0)
    with pytest.raises(ValueError, match="output must be one of"):
        CARSamplingInferer(output="mean")
    with pytest.raises(TypeError, match="seed"):
        CARSamplingInferer(seed=1.5)
    with pytest.raises(TypeError, match="CARNet"):
        CARSamplingInferer()(torch.rand(1, 1, 8, 8), torch.nn.Identity())
    with pytest.raises(TypeError, match="torch.Tensor"):
        CARSamplingInferer()([1.0], _net())
    with pytest.raises(ValueError, match=r"\(B, C, \*spatial\)"):
        CARSamplingInferer()(torch.rand(8, 8), _net())
