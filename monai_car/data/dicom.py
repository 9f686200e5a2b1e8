"""Reading one CT series from a DICOM folder as a volume in Hounsfield units with its voxel-to-RAS affine.

Slices are ordered by ImagePositionPatient along the slice normal (not by InstanceNumber, which is what MONAI's
``PydicomReader`` uses), duplicate positions are dropped, and the slice spacing must be uniform: a series with a missing
slice is an error naming the folder, never a silently stretched volume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dicom_series import find_dicom_files, read_headers, read_hu, sort_series

__all__ = ["dicom_affine_ras", "load_dicom_series"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def dicom_affine_ras(
    first_position: np.ndarray, last_position: np.ndarray, orientation: np.ndarray, pixel_spacing: np.ndarray, n: int
) -> np.ndarray:
    """The 4 x 4 voxel-to-RAS affine of a volume indexed ``(column, row, slice)``.

    Args:
        first_position, last_position: ImagePositionPatient (LPS, mm) of the first and last slice.
        orientation: ImageOrientationPatient (6,): direction of increasing column index, then of increasing row index.
        pixel_spacing: PixelSpacing (2,): spacing between rows, then between columns (mm).
        n: number of slices.
    """
    orientation = np.asarray(orientation, dtype=float)
    row_dir, col_dir = orientation[:3], orientation[3:]
    lps = np.eye(4)
    lps[:3, 0] = row_dir * float(pixel_spacing[1])
    lps[:3, 1] = col_dir * float(pixel_spacing[0])
    if n > 1:
        lps[:3, 2] = (np.asarray(last_position, float) - np.asarray(first_position, float)) / (n - 1)
    else:
        lps[:3, 2] = np.cross(row_dir, col_dir)
    lps[:3, 3] = np.asarray(first_position, dtype=float)
    return _LPS_TO_RAS @ lps


def load_dicom_series(
    folder: str | Path, series_uid: str | None = None, spacing_tolerance: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """Load one DICOM CT series as ``(array (X, Y, Z) float32 HU, voxel-to-RAS affine (4, 4))``.

    ``X`` runs along increasing column index, ``Y`` along increasing row index and ``Z`` along the slice normal, so
    the affine is the one nibabel would give the same data written as NIfTI (it opens with the right geometry in
    3D Slicer).

    Args:
        folder: a folder holding the series' files (searched recursively; other files are ignored).
        series_uid: which series, when the folder holds several.
        spacing_tolerance: largest accepted relative deviation of a slice step from the median step.

    Raises:
        FileNotFoundError: ``folder`` is not a folder or holds no DICOM image slices.
        ValueError: several series and no ``series_uid``, an unknown ``series_uid``, mixed geometry, or a gap in
            the slice positions (a missing slice); the message names the folder.
    """
    folder = Path(folder)
    files = find_dicom_files(folder)
    headers, problems = read_headers(files, progress=False)
    if not headers:
        detail = f" ({len(problems)} unreadable files, first: {problems[0]['reason']})" if problems else ""
        raise FileNotFoundError(f"{folder}: no DICOM image slices found{detail}; give the folder of one CT series.")
    by_uid: dict[str, list] = {}
    for h in headers:
        by_uid.setdefault(h.series_uid, []).append(h)
    if series_uid is None:
        if len(by_uid) > 1:
            raise ValueError(f"{folder} holds {len(by_uid)} series {sorted(by_uid)}; choose one with series_uid.")
        series_uid = next(iter(by_uid))
    if series_uid not in by_uid:
        raise ValueError(f"{folder}: no series {series_uid!r}; found {sorted(by_uid)}.")
    series = sort_series(by_uid[series_uid], expected_size=None)
    slices = series.slices
    ref = slices[0]
    normal = np.cross(ref.orientation[:3], ref.orientation[3:])
    positions = np.array([s.position for s in slices], dtype=float)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    slices = [slices[i] for i in order]
    positions, along = positions[order], along[order]
    if len(slices) > 2:
        steps = np.diff(along)
        median = float(np.median(steps))
        bad = np.flatnonzero(np.abs(steps - median) > spacing_tolerance * abs(median))
        if median <= 0 or len(bad):
            i = int(bad[0]) if len(bad) else 0
            raise ValueError(
                f"{folder}: series {series_uid} has non-uniform slice positions (step {steps[i]:.3f} mm after "
                f"{slices[i].path}, median {median:.3f} mm): a slice is missing or duplicated; re-export the series."
            )
    for s in slices:
        if (s.rows, s.columns) != (ref.rows, ref.columns):
            raise ValueError(f"{folder}: {s.path} is {s.rows} x {s.columns}, the series is {ref.rows} x {ref.columns}.")
    volume = np.stack([read_hu(s).T for s in slices], axis=-1).astype(np.float32)
    affine = dicom_affine_ras(positions[0], positions[-1], np.asarray(ref.orientation), ref.pixel_spacing, len(slices))
    return volume, affine
