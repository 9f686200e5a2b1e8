"""Lesion-centred crops of CT slices and grader masks, with their exact world geometry.

A crop is a ``size x size`` grid of sample points on one axial slice, centred on the lesion, at the native pixel
spacing (integer pixel offsets, no interpolation) or resampled to ``spacing`` mm (linear interpolation; masks are
interpolated and thresholded at 0.5). Points outside the image take air (-1000 HU) in the image and 0 in the
masks, so a nodule at the border of the field of view still gets a full, centred crop.

Arrays are first laid out like the DICOM pixel data (``[row, column]``), their affine maps them from DICOM's LPS
patient frame to NIfTI's RAS frame, and :func:`to_ras_canonical` then permutes/flips them (no interpolation) so
increasing the first voxel index moves to the patient's right (R), the second anterior (A) and the third superior
(S): the layout ``monai_car.inferers`` cuts its slabs in, so training crops and inference slabs agree. To show such
a slice in radiological convention (anterior up, patient's right on the left of the screen) display
``array.T[::-1, ::-1]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nibabel import orientations
from scipy import ndimage

__all__ = [
    "AIR_HU",
    "HU_WINDOW",
    "LPS_TO_RAS",
    "crop_affine",
    "crop_grid",
    "sample_plane",
    "slice_normal",
    "to_ras_canonical",
    "window_hu",
]

HU_WINDOW = (-1000.0, 400.0)
"""Default HU window mapped linearly to [0, 1] (lung and soft tissue; air 0, dense bone clipped at 1)."""

AIR_HU = -1000.0
"""Fill value for points outside the image."""

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""DICOM patient coordinates (LPS) to NIfTI world coordinates (RAS)."""


def window_hu(hu: np.ndarray, window: Sequence[float] = HU_WINDOW) -> np.ndarray:
    """Map Hounsfield units linearly from ``window = (low, high)`` to [0, 1], clipping outside; float32."""
    if len(window) != 2 or not window[0] < window[1]:
        raise ValueError(f"window must be (low, high) with low < high, got {window}.")
    low, high = float(window[0]), float(window[1])
    out = (np.asarray(hu, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def crop_grid(
    center: Sequence[float], size: int, pixel_spacing: Sequence[float], spacing: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column coordinates (in source pixels) of a ``size x size`` crop centred on ``center``.

    Args:
        center: ``(row, column)`` of the lesion centre in source pixel coordinates.
        size: crop size in output pixels (>= 1).
        pixel_spacing: source ``(row spacing, column spacing)`` in mm (DICOM PixelSpacing order).
        spacing: output spacing in mm; ``None`` keeps the native spacing and snaps the crop to whole pixels.

    Returns:
        ``rows (size,)``, ``cols (size,)`` and ``step (2,)`` (source pixels per output pixel along rows, columns).
    """
    if int(size) < 1:
        raise ValueError(f"crop size must be >= 1, got {size}.")
    if len(center) != 2 or len(pixel_spacing) != 2 or min(pixel_spacing) <= 0:
        raise ValueError(f"need center (row, col) and positive pixel_spacing (2,), got {center}, {pixel_spacing}.")
    if spacing is not None and spacing <= 0:
        raise ValueError(f"spacing must be positive, got {spacing}.")
    size = int(size)
    if spacing is None:
        step = np.ones(2)
    else:
        step = np.array([spacing / pixel_spacing[0], spacing / pixel_spacing[1]], dtype=float)
    start = np.asarray(center, dtype=float) - (size - 1) / 2.0 * step
    if spacing is None:
        start = np.floor(start + 0.5)
    rows = start[0] + np.arange(size) * step[0]
    cols = start[1] + np.arange(size) * step[1]
    return rows, cols, step


def sample_plane(
    plane: np.ndarray, rows: np.ndarray, cols: np.ndarray, fill: float = 0.0, offset: Sequence[int] = (0, 0)
) -> np.ndarray:
    """Sample ``plane`` at the grid ``rows x cols`` (linear; exact at whole pixels), ``fill`` outside.

    Args:
        plane: ``(H, W)`` array; ``offset`` gives the source coordinates of ``plane[0, 0]`` (for a bounding-box
            mask inside a larger image).
        rows, cols: 1D source coordinates from :func:`crop_grid`.
        fill: value outside ``plane``.
        offset: ``(row, col)`` of ``plane[0, 0]``.

    Returns:
        ``(len(rows), len(cols))`` float32.
    """
    plane = np.asarray(plane, dtype=np.float32)
    if plane.ndim != 2:
        raise ValueError(f"plane must be 2D, got shape {plane.shape}.")
    rr, cc = np.meshgrid(np.asarray(rows, float) - offset[0], np.asarray(cols, float) - offset[1], indexing="ij")
    return ndimage.map_coordinates(plane, [rr, cc], order=1, mode="constant", cval=fill, prefilter=False).astype(
        np.float32
    )


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of axial slices from ImageOrientationPatient, pointing to increasing z (the slice order)."""
    u = np.asarray(orientation[:3], dtype=float)
    v = np.asarray(orientation[3:6], dtype=float)
    n = np.cross(u, v)
    n /= np.linalg.norm(n)
    return -n if n[2] < 0 else n


def crop_affine(
    position: Sequence[float],
    orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    start: Sequence[float],
    step: Sequence[float],
    slice_spacing: float,
) -> np.ndarray:
    """Voxel-to-RAS affine of a crop laid out ``[row, column(, slice)]``.

    Voxel ``(a, b, c)`` sits at source pixel ``(start[0] + a * step[0], start[1] + b * step[1])`` of the slice at
    ``position`` (its ImagePositionPatient, LPS mm), shifted by ``c * slice_spacing`` along the slice normal.

    Args:
        position: ImagePositionPatient of the (first) slice.
        orientation: ImageOrientationPatient (column direction, then row direction).
        pixel_spacing: PixelSpacing ``(row spacing, column spacing)``.
        start: source ``(row, col)`` of voxel ``(0, 0)``.
        step: source pixels per voxel ``(along rows, along columns)``.
        slice_spacing: distance between slices (the third axis; the slice thickness for a single slice).
    """
    if len(position) != 3 or len(orientation) != 6 or len(pixel_spacing) != 2 or min(pixel_spacing) <= 0:
        raise ValueError(
            f"need position (3,), orientation (6,) and positive pixel_spacing (2,), got {position}, {orientation}, "
            f"{pixel_spacing}."
        )
    if len(start) != 2 or len(step) != 2 or min(step) <= 0 or slice_spacing <= 0:
        raise ValueError(
            f"need start (2,), positive step (2,) and slice_spacing, got {start}, {step}, {slice_spacing}."
        )
    u = np.asarray(orientation[:3], dtype=float)  # direction of increasing column index
    v = np.asarray(orientation[3:6], dtype=float)  # direction of increasing row index
    lps = np.eye(4)
    lps[:3, 0] = v * pixel_spacing[0] * step[0]
    lps[:3, 1] = u * pixel_spacing[1] * step[1]
    lps[:3, 2] = slice_normal(orientation) * float(slice_spacing)
    lps[:3, 3] = np.asarray(position, dtype=float) + start[0] * pixel_spacing[0] * v + start[1] * pixel_spacing[1] * u
    return LPS_TO_RAS @ lps


def to_ras_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip a 2D ``(H, W)`` or 3D array so its axes point R, A(, S); returns the array and its affine.

    A 2D array is treated as one slice (third axis of length 1) and returned 2D.
    """
    data = np.asarray(data)
    if data.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D array, got shape {data.shape}.")
    vol = data[..., None] if data.ndim == 2 else data
    transform = orientations.ornt_transform(orientations.io_orientation(affine), orientations.axcodes2ornt("RAS"))
    out = orientations.apply_orientation(vol, transform)
    new_affine = np.asarray(affine, dtype=float) @ orientations.inv_ornt_aff(transform, vol.shape)
    if data.ndim == 2:
        if out.shape[2] != 1:
            raise ValueError("a 2D crop's third (slice) axis must stay last; is the slice axial?")
        out = out[..., 0]
    return np.ascontiguousarray(out), new_affine
