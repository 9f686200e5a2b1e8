from __future__ import annotations

import numpy as np
import pytest

from preprocessing.crops import crop_affine, crop_grid, sample_plane, to_ras_canonical, window_hu

AXIAL = (1, 0, 0, 0, 1, 0)


def test_window_by_hand():
    np.testing.assert_allclose(window_hu(np.array([-2000, -1000, -300, 400, 900])), [0, 0, 0.5, 1, 1])
    with pytest.raises(ValueError, match="low < high"):
        window_hu(np.zeros(2), (400, -1000))


def test_native_grid_is_whole_pixels_and_centred():
    rows, cols, step = crop_grid((100.5, 20.0), 4, (0.7, 0.7))
    np.testing.assert_array_equal(rows, [99, 100, 101, 102])  # centre 100.5 = middle of the 4 pixels
    np.testing.assert_array_equal(cols, [19, 20, 21, 22])  # 20 - 1.5 = 18.5 rounds up to 19
    np.testing.assert_array_equal(step, [1, 1])
    rows, _, step = crop_grid((10.0, 10.0), 3, (0.5, 0.5), spacing=1.0)
    np.testing.assert_allclose(rows, [8, 10, 12])
    np.testing.assert_allclose(step, [2, 2])


def test_sampling_exact_at_pixels_padding_and_offset():
    plane = np.arange(20, dtype=float).reshape(4, 5)
    out = sample_plane(plane, np.array([-1, 0, 3]), np.array([0, 4, 5]), fill=-7)
    np.testing.assert_array_equal(out, [[-7, -7, -7], [0, 4, -7], [15, 19, -7]])
    np.testing.assert_allclose(sample_plane(plane, np.array([0.5]), np.array([1.0])), [[3.5]])
    sub = plane[1:3, 2:4]
    np.testing.assert_array_equal(sample_plane(sub, np.array([1, 2]), np.array([2, 3]), offset=(1, 2)), sub)


def test_affine_maps_voxels_to_dicom_positions():
    position, spacing = np.array([-180.0, -170.0, 55.5]), (0.6, 0.8)
    start, step = (10, 20), (1, 1)
    affine = crop_affine(position, AXIAL, spacing, start, step, 2.5)
    data = np.arange(12.0).reshape(3, 4)  # [row, col]
    canon, canon_affine = to_ras_canonical(data, affine)
    assert canon.shape == (4, 3)
    for a in range(3):
        for b in range(4):
            # DICOM: pixel (row 10 + a, col 20 + b) sits at LPS position + col * dx * x + row * dy * y
            lps = position + np.array([(20 + b) * 0.8, (10 + a) * 0.6, 0.0])
            ras = np.array([-lps[0], -lps[1], lps[2]])
            ijk = np.linalg.solve(canon_affine[:3, :3], ras - canon_affine[:3, 3])
            i, j = np.rint(ijk[:2]).astype(int)
            np.testing.assert_allclose(ijk, [i, j, 0], atol=1e-9)
            assert canon[i, j] == data[a, b]
    import nibabel as nib

    assert nib.aff2axcodes(canon_affine) == ("R", "A", "S")
    np.testing.assert_array_equal(canon.T[::-1, ::-1], data)  # radiological display of the canonical array


def test_3d_patch_affine_and_slices():
    affine = crop_affine((0.0, 0.0, -10.0), AXIAL, (1.0, 1.0), (0, 0), (1, 1), 2.0)
    vol = np.zeros((2, 2, 3))
    vol[..., 2] = 1
    canon, canon_affine = to_ras_canonical(vol, affine)
    np.testing.assert_allclose(canon_affine[:3, 2], [0, 0, 2.0])
    top = canon_affine @ np.array([0, 0, 2, 1.0])
    assert top[2] == pytest.approx(-6.0) and canon[..., 2].all()
