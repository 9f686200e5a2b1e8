"""Reorienting CT volumes and cutting lesion-centred slabs with exact world geometry."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nibabel import orientations
from scipy import ndimage

__all__ = ["cut_slab", "reorient", "slab_affine", "voxel_spacing"]


def reorient(data: np.ndarray, affine: np.ndarray, axcodes: str = "RAS") -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip ``data`` (X, Y, Z[, ...]) so that its voxel axes point along ``axcodes``; return the new affine.

    No interpolation: only axis permutations and flips, so intensities are unchanged.
    """
    if data.ndim < 3:
        raise ValueError(f"expected a volume (X, Y, Z[, ...]), got shape {data.shape}.")
    current = orientations.io_orientation(affine)
    target = orientations.axcodes2ornt(tuple(axcodes))
    transform = orientations.ornt_transform(current, target)
    out = orientations.apply_orientation(data, transform)
    new_affine = affine @ orientations.inv_ornt_aff(transform, data.shape[:3])
    return np.ascontiguousarray(out), new_affine


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size along each voxel axis (mm), ``(3,)``."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def slab_affine(affine: np.ndarray, start: Sequence[float], step: Sequence[float]) -> np.ndarray:
    """Affine of a sub-grid whose voxel ``(a, b, c)`` sits at parent voxel ``start + (a, b, c) * step``."""
    scale = np.eye(4)
    scale[:3, :3] = np.diag(np.asarray(step, dtype=float))
    scale[:3, 3] = np.asarray(start, dtype=float)
    return np.asarray(affine, dtype=float) @ scale


def cut_slab(
    volume: np.ndarray,
    affine: np.ndarray,
    center_voxel: Sequence[float],
    crop_size: int,
    z_range: tuple[int, int],
    in_plane_spacing: float | None = None,
    fill_value: float = -1000.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a ``(crop_size, crop_size, nz)`` slab centred in-plane on ``center_voxel`` over slices ``z_range``.

    In-plane the slab is resampled (linear) to ``in_plane_spacing`` mm when given, else kept at the native spacing;
    slices are native (no interpolation along z). Points outside the volume take ``fill_value`` (air, -1000 HU), so
    lesions at the image border still get a full crop.

    Args:
        volume: ``(X, Y, Z)`` intensities, axial slices along Z.
        affine: the volume's voxel-to-world affine.
        center_voxel: continuous voxel coordinates of the lesion centre.
        crop_size: in-plane size of the slab.
        z_range: half-open slice range ``[z0, z1)``.
        in_plane_spacing: target in-plane spacing (mm).
        fill_value: intensity outside the volume.

    Returns:
        ``(slab (crop_size, crop_size, nz) float32, slab_affine 4x4)``.
    """
    if volume.ndim != 3:
        raise ValueError(f"volume must be (X, Y, Z), got {volume.shape}.")
    z0, z1 = int(z_range[0]), int(z_range[1])
    if not 0 <= z0 < z1 <= volume.shape[2]:
        raise ValueError(f"z_range {z_range} is outside the volume's {volume.shape[2]} slices.")
    if crop_size < 1:
        raise ValueError(f"crop_size must be positive, got {crop_size}.")
    native = voxel_spacing(affine)
    step = np.ones(2) if in_plane_spacing is None else np.full(2, float(in_plane_spacing)) / native[:2]
    half = (crop_size - 1) / 2.0
    start_xy = np.asarray(center_voxel[:2], dtype=float) - half * step
    grid = np.arange(crop_size, dtype=float)
    xs = start_xy[0] + grid * step[0]
    ys = start_xy[1] + grid * step[1]
    xx, yy = np.meshgrid(xs, ys, indexing="ij")
    slab = np.empty((crop_size, crop_size, z1 - z0), dtype=np.float32)
    integer_grid = np.allclose(step, 1.0) and np.allclose(start_xy, np.round(start_xy))
    x0, y0 = (int(round(v)) for v in start_xy)
    for k, z in enumerate(range(z0, z1)):
        if integer_grid:
            slab[..., k] = _integer_crop(volume[..., z], x0, y0, crop_size, fill_value)
        else:
            slab[..., k] = ndimage.map_coordinates(
                volume[..., z].astype(np.float32), [xx, yy], order=1, mode="constant", cval=fill_value
            )
    return slab, slab_affine(affine, (start_xy[0], start_xy[1], z0), (step[0], step[1], 1.0))


def _integer_crop(plane: np.ndarray, x0: int, y0: int, size: int, fill_value: float) -> np.ndarray:
    out = np.full((size, size), fill_value, dtype=np.float32)
    xs, ys = max(x0, 0), max(y0, 0)
    xe, ye = min(x0 + size, plane.shape[0]), min(y0 + size, plane.shape[1])
    if xs < xe and ys < ye:
        out[xs - x0 : xe - x0, ys - y0 : ye - y0] = plane[xs:xe, ys:ye]
    return out
