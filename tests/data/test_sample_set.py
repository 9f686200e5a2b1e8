from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_car.data import SampleSet, hard_labels
from monai_car.visualize import figure_to_array, render_montage, sample_set_figure


def _binary(fg: np.ndarray) -> np.ndarray:
    """``(S, *spatial)`` foreground probabilities -> ``(S, 2, *spatial)`` two-class probabilities."""
    return np.stack([1.0 - fg, fg], axis=1).astype(np.float32)


FG = np.array([[[0.9, 0.2], [0.6, 0.4]], [[0.7, 0.1], [0.2, 0.8]]])  # two samples of a 2x2 case


def test_derived_maps_match_a_hand_worked_case():
    cal = _binary(np.array([[[0.75, 0.25], [0.5, 0.5]]]))[0]
    ss = SampleSet.from_predictions("c", np.zeros((2, 2), np.float32), _binary(FG), cal)
    np.testing.assert_array_equal(ss.hard_labels, [[[1, 0], [1, 0]], [[1, 0], [0, 1]]])
    np.testing.assert_allclose(ss.mean_foreground, [[0.8, 0.15], [0.4, 0.6]], atol=1e-6)
    np.testing.assert_allclose(ss.calibration_foreground, [[0.75, 0.25], [0.5, 0.5]], atol=1e-6)
    np.testing.assert_allclose(ss.uncertainty["sample_variance"], [[0.01, 0.0025], [0.04, 0.04]], atol=1e-6)

    def h(p: float) -> float:
        return -(p * math.log(p) + (1 - p) * math.log(1 - p))

    np.testing.assert_allclose(ss.uncertainty["entropy_sample_mean"], [[h(0.8), h(0.15)], [h(0.4), h(0.6)]], atol=1e-6)
    np.testing.assert_allclose(ss.uncertainty["entropy_calibration"], [[h(0.75)] * 2, [math.log(2)] * 2], atol=1e-6)
    mi = [[h(0.8) - (h(0.9) + h(0.7)) / 2, h(0.15) - (h(0.2) + h(0.1)) / 2]]
    np.testing.assert_allclose(ss.uncertainty["mutual_information"][0], mi[0], atol=1e-6)
    assert ss.affine_source == "identity" and ss.num_samples == 2 and ss.num_classes == 2 and ss.num_graders is None
    assert ss.image.shape == (1, 2, 2) and ss.voxel_volume == 1.0


def test_affine_comes_from_the_meta_tensor_and_sets_spacing_and_voxel_volume():
    affine = torch.diag(torch.tensor([0.5, 0.7, 2.0, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.zeros(1, 2, 2, 3), affine=affine)
    samples = np.stack([_binary(FG)] * 3, axis=-1)  # (S, K, 2, 2, 3)
    ss = SampleSet.from_predictions("v", image, samples, samples.mean(axis=0))
    assert ss.affine_source == "image meta 'affine'" and ss.spatial_shape == (2, 2, 3)
    np.testing.assert_allclose(ss.spacing, [0.5, 0.7, 2.0])
    assert ss.voxel_volume == pytest.approx(0.7)


def test_hard_labels_of_one_channel_and_of_many_classes():
    np.testing.assert_array_equal(hard_labels(np.array([[[0.5, 0.49]]])), [[1, 0]])
    three = np.array([[[0.2, 0.5]], [[0.5, 0.2]], [[0.3, 0.3]]])[None]  # (1, 3, 1, 2)
    np.testing.assert_array_equal(hard_labels(three), [[[1, 0]]])
    with pytest.raises(ValueError, match=r"\(S, K, \*spatial\)"):
        hard_labels(np.zeros((2, 2)))


def test_inputs_are_checked_with_the_case_named():
    s = _binary(FG)
    with pytest.raises(ValueError, match="cannot name a case folder"):
        SampleSet.from_predictions("a/b", np.zeros((2, 2)), s, s[0])
    with pytest.raises(ValueError, match=r"case c: calibration_probs \(2, 2, 3\) must be"):
        SampleSet.from_predictions("c", np.zeros((2, 2)), s, np.full((2, 2, 3), 0.5, np.float32))
    with pytest.raises(ValueError, match="case c: samples must be probabilities in"):
        SampleSet.from_predictions("c", np.zeros((2, 2)), s * 3, s[0])
    with pytest.raises(ValueError, match=r"case c: labels must hold integer classes in \[0, 1\]"):
        SampleSet.from_predictions("c", np.zeros((2, 2)), s, s[0], labels=np.full((1, 2, 2), 2))
    with pytest.raises(ValueError, match=r"case c: image \(1, 3, 3\) must be \(C, \*spatial\)"):
        SampleSet.from_predictions("c", np.zeros((3, 3)), s, s[0])


def test_the_sample_set_montage_is_the_montage_of_the_raw_arrays():
    g = torch.Generator().manual_seed(0)
    samples = torch.softmax(torch.randn(5, 2, 12, 12, generator=g), dim=1).numpy()
    cal = samples.mean(axis=0)
    labels = (np.random.default_rng(0).random((3, 12, 12)) > 0.6).astype(np.uint8)
    image = np.random.default_rng(1).random((1, 12, 12)).astype(np.float32)
    affine = np.diag([-0.7, -0.7, 1.0, 1.0])  # LPS-like in-plane flips: exercises the radiological reorientation
    ss = SampleSet.from_predictions("case", image, samples, cal, affine=affine, labels=labels)
    raw = render_montage(image, samples=samples, calibration_probs=cal, labels=labels, num_samples=4, title="case",
                         affine=ss.affine)  # fmt: skip
    np.testing.assert_array_equal(figure_to_array(sample_set_figure(ss, num_samples=4)), raw)
