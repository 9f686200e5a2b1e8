"""Reading one CT series from a DICOM folder as a volume in Hounsfield units with its voxel-to-RAS affine.

Slices are ordered by ImagePositionPatient along the slice normal (not by InstanceNumber, which is what MONAI's
``PydicomReader`` uses) and the slice spacing must be uniform: a series with a missing slice is an error naming the
folder and the slices around the gap, never a silently stretched volume. A file that cannot be read is an error naming
it (never a silently dropped slice); two files at one position are an error naming both unless their pixels are
identical (then the copy is dropped with a warning naming it).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .dicom_series import (
    DataError,
    SeriesSlices,
    SliceHeader,
    find_dicom_files,
    read_headers,
    read_hu,
    sort_series,
)

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


def _shown(items: list[str], limit: int = 3) -> str:
    return "; ".join(items[:limit]) + (f"; ... ({len(items) - limit} more)" if len(items) > limit else "")


def _read_slice(folder: Path, uid: str, header: SliceHeader) -> np.ndarray:
    try:
        return read_hu(header)
    except DataError as err:
        raise DataError(
            f"{folder}: series {uid}: {err} The slice cannot be loaded; replace that file or re-export the series."
        ) from err


def _drop_identical_duplicates(
    folder: Path, uid: str, series: SeriesSlices, by_path: dict[str, SliceHeader]
) -> dict[str, np.ndarray]:
    """HU of the kept files that had a duplicate; an error naming both files when a duplicate's pixels differ."""
    read: dict[str, np.ndarray] = {}
    copies = []
    for dup, kept in series.duplicate_of.items():
        a, b = by_path[kept], by_path[dup]
        if kept not in read:
            read[kept] = _read_slice(folder, uid, a)
        same = np.allclose(a.position, b.position, atol=1e-6) and np.array_equal(
            read[kept], _read_slice(folder, uid, b)
        )
        if not same:
            raise DataError(
                f"{folder}: series {uid} has two different slices at one position (z = {a.z:g} mm): {kept} "
                f"(InstanceNumber {a.instance_number}) and {dup} (InstanceNumber {b.instance_number}) hold different "
                "pixel data (or in-plane positions); which one belongs to the volume cannot be told, so nothing is "
                "loaded: remove the wrong file or re-export the series."
            )
        copies.append(f"{dup} (a copy of {kept})")
    if copies:
        warnings.warn(
            f"{folder}: series {uid}: dropped {len(copies)} duplicate slice(s) identical to another file at the same "
            f"position: {_shown(copies)}.",
            stacklevel=3,
        )
    return read


def load_dicom_series(
    folder: str | Path, series_uid: str | None = None, spacing_tolerance: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """Load one DICOM CT series as ``(array (X, Y, Z) float32 HU, voxel-to-RAS affine (4, 4))``.

    ``X`` runs along increasing column index, ``Y`` along increasing row index and ``Z`` along the slice normal, so
    the affine is the one nibabel would give the same data written as NIfTI (it opens with the right geometry in
    3D Slicer).

    Args:
        folder: a folder holding the series' files (searched recursively: ``*.dcm`` and files without a suffix; a
            file that is not a DICOM image slice, e.g. a report, is ignored with a warning naming it).
        series_uid: which series, when the folder holds several.
        spacing_tolerance: largest accepted relative deviation of a slice step from the median step.

    Raises:
        FileNotFoundError: ``folder`` is not a folder or holds no DICOM image slices.
        DataError: (a ``ValueError``) a ``.dcm`` file whose header or pixel data cannot be read (named), or two files
            at one position whose pixels differ (both named).
        ValueError: several series and no ``series_uid``, an unknown ``series_uid``, mixed geometry, or a gap in
            the slice positions (a missing slice); the message names the folder and the slices around the gap.
    """
    folder = Path(folder)
    files = find_dicom_files(folder)
    headers, problems = read_headers(files, progress=False)
    if not headers:
        detail = f" ({len(problems)} unreadable files, first: {problems[0]['reason']})" if problems else ""
        raise FileNotFoundError(f"{folder}: no DICOM image slices found{detail}; give the folder of one CT series.")
    if problems:
        reasons = [p["reason"].removesuffix("; skipped.").rstrip(".") for p in problems]
        raise DataError(
            f"{folder}: {len(problems)} of {len(files)} DICOM file(s) cannot be read: {_shown(reasons)}. The series "
            "would be loaded without them (missing slices), so nothing is loaded: replace or re-export these files "
            "(or remove them if they are not part of the series)."
        )
    seen = {h.path for h in headers}
    ignored = [str(f) for f in files if str(f) not in seen]
    if ignored:
        warnings.warn(
            f"{folder}: ignored {len(ignored)} file(s) that are not DICOM image slices (without a suffix and not "
            f"DICOM, or a DICOM object without an image position, e.g. a report): {_shown(ignored)}.",
            stacklevel=2,
        )
    by_uid: dict[str, list] = {}
    for h in headers:
        by_uid.setdefault(h.series_uid, []).append(h)
    if series_uid is None:
        if len(by_uid) > 1:
            raise ValueError(
                f"{folder} holds {len(by_uid)} series {sorted(by_uid)}; give a folder with one series (the LIDC "
                "bundle's inference reads one series per study folder), or choose one with "
                "load_dicom_series(folder, series_uid=...)."
            )
        series_uid = next(iter(by_uid))
    if series_uid not in by_uid:
        raise ValueError(f"{folder}: no series {series_uid!r}; found {sorted(by_uid)}.")
    series = sort_series(by_uid[series_uid], expected_size=None)
    read = _drop_identical_duplicates(folder, series_uid, series, {h.path: h for h in by_uid[series_uid]})
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
            hint = f" Files ignored as not DICOM image slices: {_shown(ignored)}." if ignored else ""
            raise ValueError(
                f"{folder}: series {series_uid} has non-uniform slice positions (step {steps[i]:.3f} mm between "
                f"{slices[i].path} and {slices[i + 1].path}, median {median:.3f} mm): a slice between them is missing "
                f"or out of place; re-export the series.{hint}"
            )
    for s in slices:
        if (s.rows, s.columns) != (ref.rows, ref.columns):
            raise ValueError(f"{folder}: {s.path} is {s.rows} x {s.columns}, the series is {ref.rows} x {ref.columns}.")
    planes = [read[s.path] if s.path in read else _read_slice(folder, series_uid, s) for s in slices]
    volume = np.stack([p.T for p in planes], axis=-1).astype(np.float32)
    affine = dicom_affine_ras(positions[0], positions[-1], np.asarray(ref.orientation), ref.pixel_spacing, len(slices))
    return volume, affine
