"""The scene montage: one panel per map, one per sample, in the class colours; bad shapes are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_car.utils.cityscapes_classes import class_colors
from monai_car.visualize import save_scene_montage, scene_montage_figure


def test_panels_and_sample_colours(tmp_path):
    samples = torch.zeros(3, 25, 8, 16)
    samples[:, 13] = 1.0  # every sample: car everywhere
    probs = torch.full((25, 8, 16), 1 / 25)
    fig = scene_montage_figure(torch.rand(28, 8, 16), samples, probs, torch.zeros(1, 8, 16), num_samples=2)
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == [
        "image", "ground truth", "F: argmax", "F: entropy", "samples: entropy", "sample 1", "sample 2",
    ]  # fmt: skip
    shown = axes[5].get_images()[0].get_array()
    assert np.allclose(shown[0, 0], class_colors()[13] / 255.0)
    path = save_scene_montage(tmp_path / "m.png", torch.rand(3, 8, 16), samples=samples)
    assert path.is_file() and path.stat().st_size > 0


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="share"):
        scene_montage_figure(torch.rand(3, 8, 16), torch.rand(2, 25, 8, 8))
    with pytest.raises(ValueError, match="label"):
        scene_montage_figure(torch.rand(3, 8, 16), torch.rand(2, 25, 8, 16), label=torch.zeros(2, 8, 16))
