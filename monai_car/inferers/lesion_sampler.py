"""Clinical-research inference: sample sets and uncertainty maps for lesions in CT volumes."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from monai_car.data.sample_set import SampleSet
from monai_car.data.sample_set_io import save_nifti_atomic, save_sample_set
from monai_car.networks.nets import CARNet
from monai_car.transforms.loading import read_nifti
from monai_car.utils.atomic import atomic_dir, remove_stale_staging, write_csv_atomic

from .lesion_locations import Lesion, world_to_voxel
from .volume_geometry import cut_slab, reorient, voxel_spacing

__all__ = ["LesionPrediction", "LesionSampleSetPredictor", "load_ct_volume", "SUMMARY_COLUMNS"]

logger = logging.getLogger(__name__)

SUMMARY_COLUMNS = [
    "study",
    "lesion_id",
    "center_x_ras",
    "center_y_ras",
    "center_z_ras",
    "num_slices",
    "num_samples",
    "mean_mask_volume_mm3",
    "sample_volume_mean_mm3",
    "sample_volume_std_mm3",
    "sample_volume_p05_mm3",
    "sample_volume_p95_mm3",
    "mean_entropy_nats",
    "output_dir",
]


class LesionPrediction(NamedTuple):
    """One lesion's result: its sample set on the slab (image ``(1, H, W, Z)`` in [0, 1], the slab's affine) and the
    slab's slice range ``[z0, z1)`` in the reoriented volume."""

    sample_set: SampleSet
    z_range: tuple[int, int]


def load_ct_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a CT volume in Hounsfield units as ``(array (X, Y, Z) float32, voxel-to-RAS affine)``.

    A file is read as NIfTI; a folder as one DICOM series (slices ordered by ImagePositionPatient, not
    InstanceNumber, rescale slope/intercept applied) through :func:`monai_car.data.dicom.load_dicom_series`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CT volume {path} does not exist (give a NIfTI file or a DICOM series folder).")
    if path.is_dir():
        from monai_car.data.dicom import load_dicom_series

        return load_dicom_series(path)
    data, affine = read_nifti(path, "CT volume", np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D CT volume, got shape {data.shape}.")
    return data, affine


class LesionSampleSetPredictor:
    """Runs a trained 2D :class:`CARNet` slice by slice over lesion-centred slabs of CT volumes.

    For each lesion: the volume is reoriented (axis permutations/flips only) to ``axcodes``, a slab of
    ``crop_size x crop_size`` in-plane (at ``in_plane_spacing`` mm, or native) over the slices covering the lesion is
    cut, HU-windowed to [0, 1] exactly as the training crops were, F runs once and G draws ``num_samples`` label maps
    per slice. The sample set and uncertainty maps are written with the slab's own affine, so they overlay on the
    original CT in world coordinates (3D Slicer), plus a per-study full-grid NIfTI of the mean foreground probability
    and a summary CSV.

    Args:
        network: the trained CARNet (2D).
        num_samples: G draws per slice.
        crop_size: in-plane slab size (the training crop size).
        in_plane_spacing: in-plane spacing (mm) of the training crops; native spacing when ``None``.
        hu_window: HU range mapped linearly to [0, 1] and clipped.
        half_extent_mm: half the z extent to cover when a lesion's extent is unknown (CSV input).
        axcodes: voxel orientation of the training crops.
        batch_size: slices per forward pass.
        seed: seed of the noise generator (each lesion restarts from it, so results do not depend on lesion order).
        device: torch device.
        montage: write a PNG montage per lesion (its central slice).
    """

    def __init__(
        self,
        network: CARNet,
        num_samples: int = 16,
        crop_size: int = 128,
        in_plane_spacing: float | None = None,
        hu_window: Sequence[float] = (-1000.0, 400.0),
        half_extent_mm: float = 15.0,
        axcodes: str = "RAS",
        batch_size: int = 8,
        seed: int = 0,
        device: str | torch.device = "cpu",
        montage: bool = True,
    ) -> None:
        if not isinstance(network, CARNet):
            raise TypeError(f"network must be a CARNet, got {type(network).__name__}.")
        if num_samples < 1 or crop_size < 16 or batch_size < 1 or half_extent_mm <= 0:
            raise ValueError("need num_samples >= 1, crop_size >= 16, batch_size >= 1 and half_extent_mm > 0.")
        if len(hu_window) != 2 or hu_window[0] >= hu_window[1]:
            raise ValueError(f"hu_window must be (low, high) with low < high, got {hu_window}.")
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.num_samples = int(num_samples)
        self.crop_size = int(crop_size)
        self.in_plane_spacing = in_plane_spacing
        self.hu_window = (float(hu_window[0]), float(hu_window[1]))
        self.half_extent_mm = float(half_extent_mm)
        self.axcodes = axcodes
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.montage = montage

    def _z_range(self, volume: np.ndarray, spacing: np.ndarray, center: np.ndarray, lesion: Lesion) -> tuple[int, int]:
        half = self.half_extent_mm if lesion.extent_mm is None else max(float(lesion.extent_mm[2]) / 2.0, spacing[2])
        n = max(int(math.ceil(half / spacing[2])), 0)
        c = int(round(center[2]))
        if not 0 <= c < volume.shape[2]:
            raise ValueError(
                f"lesion {lesion.lesion_id} lies outside the volume along z (slice {c} of {volume.shape[2]})."
            )
        return max(c - n, 0), min(c + n + 1, volume.shape[2])

    @torch.inference_mode()
    def predict_lesion(self, volume: np.ndarray, affine: np.ndarray, lesion: Lesion) -> LesionPrediction:
        """Sample one lesion of a volume already in ``self.axcodes`` orientation.

        F runs once per slice and G draws ``num_samples`` label maps per slice through ``CARNet.sample`` (noise from
        a generator seeded with ``seed`` for every lesion).

        Returns:
            the lesion's :class:`LesionPrediction`: a :class:`~monai_car.data.SampleSet` with ``samples``
            ``(S, K, H, W, Z)`` and ``calibration_probs`` ``(K, H, W, Z)`` on the slab, and the slab's ``z_range``.
        """
        center = world_to_voxel(affine, lesion.center_ras)[0]
        if not all(-0.5 <= c < s - 0.5 for c, s in zip(center, volume.shape)):
            raise ValueError(
                f"lesion {lesion.lesion_id} at RAS {np.round(lesion.center_ras, 1).tolist()} lies outside the volume "
                f"(voxel {np.round(center, 1).tolist()}, shape {volume.shape}): check the coordinate frame (LPS/RAS)."
            )
        z_range = self._z_range(volume, voxel_spacing(affine), center, lesion)
        slab, slab_aff = cut_slab(volume, affine, center, self.crop_size, z_range, self.in_plane_spacing)
        lo, hi = self.hu_window
        image = np.clip((slab - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        x = torch.from_numpy(np.moveaxis(image, 2, 0)[:, None]).to(self.device)  # (Z, 1, H, W)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        probs, samples = [], []
        for i in range(0, x.shape[0], self.batch_size):
            xb = x[i : i + self.batch_size]
            pb = self.network(xb)
            samples.append(self.network.sample(xb, self.num_samples, generator=generator, calibration_probs=pb).cpu())
            probs.append(pb.cpu())
        p = torch.cat(probs)  # (Z, K, H, W)
        s = torch.cat(samples)  # (Z, S, K, H, W)
        sample_set = SampleSet.from_predictions(
            lesion.lesion_id, image[None], s.permute(1, 2, 3, 4, 0).numpy(), p.permute(1, 2, 3, 0).numpy(),
            affine=slab_aff,
        )  # fmt: skip
        return LesionPrediction(sample_set, z_range)

    def run_study(
        self, ct_path: str | Path, lesions: Sequence[Lesion], output_dir: str | Path, study_id: str | None = None
    ) -> Path:
        """Sample every lesion of one CT; returns the study's summary CSV path."""
        ct_path = Path(ct_path)
        study = study_id or ct_path.name.split(".")[0]
        if not lesions:
            raise ValueError(f"no lesion given for study {study} ({ct_path}).")
        data, ct_affine = load_ct_volume(ct_path)
        volume, affine = reorient(data, ct_affine, self.axcodes)
        study_dir = Path(output_dir) / study
        study_dir.mkdir(parents=True, exist_ok=True)
        montage_writer = None
        if self.montage:
            from monai_car.visualize.montage import save_sample_set_montage

            montage_writer = partial(save_sample_set_montage, num_samples=min(8, self.num_samples))
        full_fg = np.zeros(data.shape, dtype=np.float32)  # the CT's own grid and affine: a label map for it
        rows = []
        for lesion in tqdm(lesions, desc=f"lesions of {study}", leave=False):
            prediction = self.predict_lesion(volume, affine, lesion)
            case_dir = save_sample_set(study_dir, prediction.sample_set, seed=self.seed, montage_writer=montage_writer)
            rows.append(self._summary_row(study, lesion, prediction, Path(case_dir)))
            self._paste(full_fg, ct_affine, prediction.sample_set)
        save_nifti_atomic(study_dir / "mean_foreground_full.nii.gz", full_fg, ct_affine)
        return write_csv_atomic(study_dir / "summary.csv", rows, SUMMARY_COLUMNS)

    @staticmethod
    def _summary_row(study: str, lesion: Lesion, prediction: LesionPrediction, case_dir: Path) -> dict:
        ss = prediction.sample_set
        voxel_mm3 = ss.voxel_volume
        hard = ss.hard_labels > 0  # (S, H, W, Z)
        volumes = hard.reshape(hard.shape[0], -1).sum(axis=1) * voxel_mm3
        region = hard.any(axis=0) | (ss.calibration_probs[0] <= 0.5)
        ent = ss.uncertainty["entropy_calibration"]
        z0, z1 = prediction.z_range
        return {
            "study": study,
            "lesion_id": lesion.lesion_id,
            "center_x_ras": round(float(lesion.center_ras[0]), 3),
            "center_y_ras": round(float(lesion.center_ras[1]), 3),
            "center_z_ras": round(float(lesion.center_ras[2]), 3),
            "num_slices": int(z1 - z0),
            "num_samples": ss.num_samples,
            "mean_mask_volume_mm3": round(float((ss.mean_foreground >= 0.5).sum() * voxel_mm3), 3),
            "sample_volume_mean_mm3": round(float(volumes.mean()), 3),
            "sample_volume_std_mm3": round(float(volumes.std()), 3),
            "sample_volume_p05_mm3": round(float(np.percentile(volumes, 5)), 3),
            "sample_volume_p95_mm3": round(float(np.percentile(volumes, 95)), 3),
            "mean_entropy_nats": round(float(ent[region].mean()) if region.any() else 0.0, 5),
            "output_dir": case_dir.name,
        }

    @staticmethod
    def _paste(full: np.ndarray, affine: np.ndarray, sample_set: SampleSet) -> None:
        """Put the slab's mean foreground probability back into the full grid (nearest voxel, max over overlaps)."""
        mean_fg = sample_set.mean_foreground  # (H, W, Z)
        to_full = np.linalg.inv(affine) @ sample_set.affine
        idx = np.indices(mean_fg.shape).reshape(3, -1)
        vox = np.rint(to_full[:3, :3] @ idx + to_full[:3, 3:4]).astype(int)
        inside = np.all((vox >= 0) & (vox < np.array(full.shape)[:, None]), axis=0)
        vals = mean_fg.reshape(-1)[inside]
        vx, vy, vz = vox[:, inside]
        np.maximum.at(full, (vx, vy, vz), vals)

    def run(self, studies: Sequence[dict], output_dir: str | Path) -> list[Path]:
        """Run over ``studies``, each ``{"image": CT path, "lesions": [Lesion, ...], "study": optional id}``.

        The whole run is written into a staging folder beside ``output_dir`` that replaces ``output_dir`` when every
        study is done: a failed or killed run leaves the previous run's folder as it was (no study or lesion folder
        of two runs side by side, none of an earlier run that this one does not produce), and leftovers of killed
        runs beside ``output_dir`` are removed first.

        Returns:
            the studies' summary CSV paths (in ``output_dir``).
        """
        for item in studies:
            for key in ("image", "lesions"):
                if key not in item:
                    raise KeyError(f"study entry {item} lacks {key!r}.")
        output_dir = Path(output_dir)
        for stale in remove_stale_staging(output_dir):
            logger.warning("removed %s, left by an earlier inference run that did not finish.", stale)
        with atomic_dir(output_dir) as stage:
            outputs = [
                self.run_study(item["image"], item["lesions"], stage, item.get("study"))
                for item in tqdm(studies, desc="studies")
            ]
        return [output_dir / p.relative_to(stage) for p in outputs]
