"""A case's sample set on disk: NIfTI that overlays on the CT, a JSON manifest, one atomically replaced folder."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from monai_car.utils.atomic import atomic_dir, atomic_file

from .sample_set import SampleSet

__all__ = [
    "SAMPLE_SET_FILES",
    "atomic_case_dir",
    "sample_set_metrics",
    "save_json",
    "save_nifti",
    "save_nifti_atomic",
    "save_sample_set",
]

SAMPLE_SET_FILES = {
    "samples": "samples.nii.gz",
    "sample_mean": "sample_mean.nii.gz",
    "calibration_probs": "calibration_probs.nii.gz",
    "entropy_calibration": "entropy_calibration.nii.gz",
    "entropy_sample_mean": "entropy_sample_mean.nii.gz",
    "mutual_information": "mutual_information.nii.gz",
    "sample_variance": "sample_variance.nii.gz",
    "image": "image.nii.gz",
    "labels": "labels.nii.gz",
}
"""The NIfTI files of a case folder (``labels`` only when labels are given)."""

MONTAGE_FILE = "montage.png"

logger = logging.getLogger(__name__)


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write ``data`` (spatial axes first, then any extra axis) as NIfTI with ``affine`` in both sform and qform."""
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.header.set_sform(affine, code=1)
    img.header.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))


def save_nifti_atomic(path: str | Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """:func:`save_nifti` to ``path`` atomically (temporary file + rename; ``.nii.gz`` is compressed)."""
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    with atomic_file(path, suffix=suffix) as tmp:  # nibabel compresses when the name ends in .gz
        save_nifti(tmp, data, affine)
    return path


def save_json(path: Path, content: dict) -> None:
    """Write ``content`` as indented JSON."""
    with open(path, "w") as f:
        json.dump(content, f, indent=2, sort_keys=False)
        f.write("\n")


@contextmanager
def atomic_case_dir(output_dir: Path, case_id: str) -> Iterator[Path]:
    """Yield a temporary folder inside ``output_dir``; on success it replaces ``output_dir/case_id`` as a whole.

    On an exception the temporary folder is removed and an existing case folder is left untouched; a reader never
    sees a mixture of old and new files (an old folder is moved aside, the new one renamed into place, then the old
    one deleted). The folder gets the permissions of ``os.mkdir`` (``0o777 & ~umask``, see
    :func:`monai_car.utils.atomic.atomic_dir`), so a case folder is as readable as any other output.
    """
    final = Path(output_dir) / case_id
    if (final.exists() or final.is_symlink()) and not final.is_dir():
        raise FileExistsError(f"{final} exists and is not a folder; move it away before writing case {case_id}.")
    with atomic_dir(final) as tmp:
        yield tmp


def _channels_last(x: np.ndarray) -> np.ndarray:
    """``(N, *spatial) -> (*spatial, N)``: the set axis becomes the last NIfTI axis."""
    return np.moveaxis(x, 0, -1)


def sample_set_metrics(sample_set: SampleSet) -> dict[str, float]:
    """GED (squared, V-statistic) and, for binary problems, HM-IoU of the hard samples against the graders (empty
    without labels)."""
    from monai_car.metrics.generalized_energy_distance import compute_generalized_energy_distance
    from monai_car.metrics.hungarian_matched_iou import compute_hungarian_matched_iou

    if sample_set.labels is None:
        return {}
    s = torch.from_numpy(sample_set.hard_labels.astype(np.int64))[None]
    y = torch.from_numpy(sample_set.labels.astype(np.int64))[None]
    if sample_set.num_classes <= 2:
        return {
            "ged": float(compute_generalized_energy_distance(s > 0, y > 0)[0]),
            "hm_iou": float(compute_hungarian_matched_iou(s > 0, y > 0)[0]),
        }
    return {"ged": float(compute_generalized_energy_distance(s, y, num_classes=sample_set.num_classes)[0])}


def _check_metrics(metrics: Mapping | None) -> dict[str, float]:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict of name -> number, got {type(metrics).__name__}.")
    out = {}
    for k, v in metrics.items():
        try:
            out[str(k)] = float(v.item() if isinstance(v, torch.Tensor) else v)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"metric {k!r} must be a number (or a one-element tensor), got {v!r}.") from e
    return out


def _arrays(sample_set: SampleSet) -> dict[str, tuple[np.ndarray, str]]:
    """``name -> (array, layout)`` of every NIfTI file, in :data:`SAMPLE_SET_FILES` order."""
    ss = sample_set
    if ss.num_classes <= 2:
        layout = "(*spatial): foreground probability"
        mean_map, cal_map = ss.mean_foreground, ss.calibration_foreground
    else:
        layout = "(*spatial, K): probability of each class"
        mean_map, cal_map = _channels_last(ss.sample_mean), _channels_last(ss.calibration_probs)
    arrays: dict[str, tuple[np.ndarray, str]] = {
        "samples": (_channels_last(ss.hard_labels), "(*spatial, S): argmax label map of each sample"),
        "sample_mean": (mean_map.astype(np.float32), layout + " (mean of G's samples)"),
        "calibration_probs": (cal_map.astype(np.float32), layout + " (F)"),
    }
    for name, m in ss.uncertainty.items():
        arrays[name] = (m, "(*spatial)")
    image = ss.image[0] if ss.image.shape[0] == 1 else _channels_last(ss.image)
    arrays["image"] = (image.astype(np.float32), "image")
    if ss.labels is not None:
        arrays["labels"] = (_channels_last(ss.labels), "(*spatial, R): the graders' masks")
    return arrays


def save_sample_set(
    output_dir: str | Path,
    sample_set: SampleSet,
    seed: int | None = None,
    metrics: Mapping[str, Any] | None = None,
    montage_writer: Callable[[Path, SampleSet], Any] | None = None,
) -> Path:
    """Write a :class:`SampleSet` to ``output_dir/<case_id>/``, atomically (see ``write_sample_set`` for the files).

    Everything is written in a temporary folder inside ``output_dir`` that then replaces ``<case_id>/`` as a
    whole: a failure leaves no partial folder and an existing folder is replaced without mixing old and new files.

    Args:
        output_dir: the parent folder (created if needed).
        sample_set: the case.
        seed: the seed of the noise draws, recorded in the manifest.
        metrics: extra per-case numbers for the manifest (they override ``ged`` / ``hm_iou``).
        montage_writer: called as ``montage_writer(path, sample_set)`` to draw ``montage.png`` inside the folder
            (e.g. :func:`monai_car.visualize.save_sample_set_montage`); None: no montage.

    Returns:
        the case folder.
    """
    if not isinstance(sample_set, SampleSet):
        raise TypeError(
            f"sample_set must be a SampleSet (SampleSet.from_predictions), got {type(sample_set).__name__}."
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed must be an int or None, got {seed!r}.")
    extra_metrics = _check_metrics(metrics)
    arrays = _arrays(sample_set)
    case_metrics = sample_set_metrics(sample_set)
    case_metrics.update(extra_metrics)
    ss = sample_set
    if ss.affine_source == "identity":
        logger.warning(
            "case %s: no affine given and the image has no metadata; writing an identity affine.", ss.case_id
        )
    with atomic_case_dir(Path(output_dir), ss.case_id) as tmp:
        for name, (data, _) in arrays.items():
            save_nifti(tmp / SAMPLE_SET_FILES[name], data, ss.affine)
        montage_file = None
        if montage_writer is not None:
            montage_file = MONTAGE_FILE
            montage_writer(tmp / montage_file, ss)
        manifest = {
            "case_id": ss.case_id,
            "num_samples": ss.num_samples,
            "num_classes": ss.num_classes,
            "num_graders": ss.num_graders,
            "seed": None if seed is None else int(seed),
            "spatial_dims": len(ss.spatial_shape),
            "spatial_shape": list(ss.spatial_shape),
            "spacing": [round(float(s), 6) for s in ss.spacing],
            "affine": ss.affine.tolist(),
            "affine_source": ss.affine_source,
            "files": {name: SAMPLE_SET_FILES[name] for name in arrays},
            "shapes": {name: [int(s) for s in data.shape] for name, (data, _) in arrays.items()},
            "layouts": {name: layout for name, (_, layout) in arrays.items()},
            "montage": montage_file,
            "metrics": {k: (None if math.isnan(v) else v) for k, v in case_metrics.items()},
            "units": {"entropy": "nats", "ged": "squared generalized energy distance (V-statistic)"},
        }
        save_json(tmp / "manifest.json", manifest)
    return Path(output_dir) / ss.case_id
