from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

import monai_car.metrics.pairwise_iou as pairwise_module
from monai_car.metrics import compute_pairwise_class_iou, compute_pairwise_iou, compute_pairwise_iou_distance


def _quadrant_masks() -> torch.Tensor:
    """(4, 4, 4) masks: top half (8 px), left half (8 px), top-left quarter (4 px), empty."""
    m = torch.zeros(4, 4, 4, dtype=torch.bool)
    m[0, :2, :] = True
    m[1, :, :2] = True
    m[2, :2, :2] = True
    return m


def _numpy_iou(p: np.ndarray, q: np.ndarray) -> float:
    union = np.logical_or(p, q).sum()
    return 1.0 if union == 0 else np.logical_and(p, q).sum() / union


def test_hand_computed_values():
    m = _quadrant_masks()[None]  # (1, 4, 4, 4)
    iou = compute_pairwise_iou(m, m)
    expected = torch.tensor(
        [
            [1.0, 4 / 12, 4 / 8, 0.0],
            [4 / 12, 1.0, 4 / 8, 0.0],
            [4 / 8, 4 / 8, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],  # empty vs empty: IoU 1
        ]
    )
    assert iou.shape == (1, 4, 4) and iou.dtype == torch.float32
    torch.testing.assert_close(iou[0], expected)
    torch.testing.assert_close(compute_pairwise_iou_distance(m, m)[0], 1.0 - expected)
    assert compute_pairwise_iou_distance(m, m)[0, 3, 3] == 0.0


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int32, torch.int64, torch.float16, torch.float64])
def test_dtypes_agree(dtype):
    m = _quadrant_masks()[None]
    torch.testing.assert_close(compute_pairwise_iou(m.to(dtype), m[:, :2].to(dtype)), compute_pairwise_iou(m, m[:, :2]))


def test_random_against_numpy_loop_2d_and_3d():
    g = torch.Generator().manual_seed(0)
    for spatial in ((5, 6), (3, 4, 5)):
        a = torch.rand(2, 5, *spatial, generator=g) < 0.3
        b = torch.rand(2, 3, *spatial, generator=g) < 0.6
        a[0, 1] = False  # an empty mask against non-empty ones
        b[1, 0] = False
        a[1, 2] = False  # empty vs empty
        iou = compute_pairwise_iou(a, b).numpy()
        ref = np.array(
            [[[_numpy_iou(a[i, n].numpy(), b[i, m].numpy()) for m in range(3)] for n in range(5)] for i in range(2)]
        )
        np.testing.assert_allclose(iou, ref, rtol=1e-6)


def test_large_volume_path_counts_in_float64(monkeypatch):
    """Above 2**24 pixels float32 stops counting exactly: the helper switches to float64 (threshold patched small)."""
    g = torch.Generator().manual_seed(1)
    a = torch.rand(1, 3, 7, 7, generator=g) < 0.5
    b = torch.rand(1, 2, 7, 7, generator=g) < 0.5
    expected = compute_pairwise_iou(a, b)
    monkeypatch.setattr(pairwise_module, "FLOAT32_EXACT_INT", 10)
    inter, _ = pairwise_module.pairwise_intersection_union(a.flatten(2), b.flatten(2))
    assert inter.dtype == torch.float64
    torch.testing.assert_close(compute_pairwise_iou(a, b), expected)


def test_metatensor_input_and_device():
    m = _quadrant_masks()[None].float()
    out = compute_pairwise_iou(MetaTensor(m), MetaTensor(m))
    assert type(out) is torch.Tensor and out.device == m.device


def test_class_iou_present_and_absent_classes():
    a = torch.tensor([[[1, 1, 2, 0]]])  # (1, 1, 4)
    b = torch.tensor([[[1, 0, 2, 2]], [[0, 0, 0, 0]]]).reshape(1, 2, 4)
    iou, present = compute_pairwise_class_iou(a, b, classes=[1, 2, 3], num_classes=4)
    assert iou.shape == present.shape == (1, 1, 2, 3)
    # vs b0: class 1 -> 1/2, class 2 -> 1/2, class 3 absent from both -> IoU 1, not present
    torch.testing.assert_close(iou[0, 0, 0], torch.tensor([0.5, 0.5, 1.0]))
    assert present[0, 0, 0].tolist() == [True, True, False]
    # vs the all-background map: classes 1, 2 present only in a -> IoU 0
    torch.testing.assert_close(iou[0, 0, 1], torch.tensor([0.0, 0.0, 1.0]))
    # integral floats are accepted as label maps
    iou_f, _ = compute_pairwise_class_iou(a.float(), b.double(), classes=[1, 2, 3])
    torch.testing.assert_close(iou_f, iou)


@pytest.mark.parametrize(
    "a, b, match",
    [
        (torch.full((1, 2, 4, 4), 2.0), torch.zeros(1, 2, 4, 4), "binary mask"),
        (torch.full((1, 2, 4, 4), 0.5), torch.zeros(1, 2, 4, 4), "binary mask"),
        (torch.zeros(2, 2, 4, 4), torch.zeros(1, 2, 4, 4), "batch sizes differ"),
        (torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5), "spatial shapes differ"),
        (torch.zeros(2, 4), torch.zeros(2, 4), "at least one spatial dim"),
        (torch.zeros(1, 0, 4, 4), torch.zeros(1, 2, 4, 4), "empty set"),
        (torch.zeros(1, 2, 4, 4, dtype=torch.complex64), torch.zeros(1, 2, 4, 4), "real tensor"),
    ],
)
def test_invalid_inputs(a, b, match):
    with pytest.raises(ValueError, match=match):
        compute_pairwise_iou(a, b)


def test_invalid_non_tensor_and_class_arguments():
    m = torch.zeros(1, 2, 4, 4, dtype=torch.long)
    with pytest.raises(TypeError, match="torch.Tensor"):
        compute_pairwise_iou(np.zeros((1, 2, 4, 4)), m)
    with pytest.raises(ValueError, match="labels in"):
        compute_pairwise_class_iou(m + 5, m, classes=[1], num_classes=3)
    with pytest.raises(ValueError, match="non-integral"):
        compute_pairwise_class_iou(m + 0.5, m, classes=[1])
    with pytest.raises(ValueError, match="non-empty sequence"):
        compute_pairwise_class_iou(m, m, classes=[])
    with pytest.raises(ValueError, match="duplicates"):
        compute_pairwise_class_iou(m, m, classes=[1, 1])
    with pytest.raises(ValueError, match="outside"):
        compute_pairwise_class_iou(m, m, classes=[3], num_classes=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_keeps_device():
    m = _quadrant_masks()[None].cuda()
    out = compute_pairwise_iou(m, m)
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), compute_pairwise_iou(m.cpu(), m.cpu()))
    with pytest.raises(ValueError, match="same device"):
        compute_pairwise_iou(m, m.cpu())
