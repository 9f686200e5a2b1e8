from __future__ import annotations

import numpy as np
import pytest

from monai_car.inferers import cut_slab, reorient, voxel_spacing, world_to_voxel


def _lps_affine(spacing=(0.7, 0.8, 1.25), origin=(-150.0, -120.0, -300.0)):
    """A DICOM-like volume: voxel axes along L, P, S, stored as NIfTI (RAS) affine."""
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    aff[:3, 3] = [-origin[0], -origin[1], origin[2]]
    return aff


def test_reorient_keeps_world_positions():
    rng = np.random.default_rng(0)
    data = rng.random((6, 5, 4)).astype(np.float32)
    aff = _lps_affine()
    out, new_aff = reorient(data, aff, "RAS")
    assert out.shape == (6, 5, 4)
    # every voxel keeps its value at the same world position
    for i, j, k in [(0, 0, 0), (5, 4, 3), (2, 3, 1)]:
        world = aff @ np.array([i, j, k, 1.0])
        v = np.rint(np.linalg.inv(new_aff) @ world).astype(int)[:3]
        assert out[tuple(v)] == data[i, j, k]
    assert new_aff[0, 0] > 0 and new_aff[1, 1] > 0


def test_cut_slab_integer_grid_and_border_fill():
    vol = np.arange(10 * 12 * 3, dtype=np.float32).reshape(10, 12, 3)
    aff = _lps_affine()
    slab, slab_aff = cut_slab(vol, aff, (1.0, 6.0, 1.0), crop_size=4, z_range=(1, 3))
    # crop_size 4 centred at 1.0 -> start at -0.5: not integer, so use an odd crop for an exact integer grid
    slab, slab_aff = cut_slab(vol, aff, (1.0, 6.0, 1.0), crop_size=5, z_range=(1, 3))
    assert slab.shape == (5, 5, 2)
    assert slab[0, 0, 0] == -1000.0  # x = -1 is outside: air
    np.testing.assert_array_equal(slab[1:, :, 0], vol[0:4, 4:9, 1])
    # the slab affine maps slab voxel (a, b, c) to the same world point as the source voxel
    src = aff @ np.array([2, 5, 2, 1.0])
    np.testing.assert_allclose(slab_aff @ np.array([3, 1, 1, 1.0]), src)


def test_cut_slab_resampled_geometry():
    x = np.arange(20, dtype=np.float32)
    vol = np.broadcast_to(x[:, None, None], (20, 20, 2)).copy()  # value = x index
    aff = _lps_affine(spacing=(1.0, 1.0, 2.0))
    slab, slab_aff = cut_slab(vol, aff, (10.0, 10.0, 0.0), crop_size=9, z_range=(0, 1), in_plane_spacing=0.5)
    np.testing.assert_allclose(voxel_spacing(slab_aff), [0.5, 0.5, 2.0])
    # linear interpolation of a linear ramp is exact: value = source x index of each slab voxel
    for a in range(9):
        world = slab_aff @ np.array([a, 4, 0, 1.0])
        src_x = world_to_voxel(aff, world[:3])[0, 0]
        assert slab[a, 4, 0] == pytest.approx(src_x, abs=1e-4)
    assert slab[4, 4, 0] == pytest.approx(10.0)


def test_cut_slab_errors():
    vol = np.zeros((8, 8, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="z_range"):
        cut_slab(vol, np.eye(4), (4, 4, 2), 4, (2, 6))
