"""Running the bundle's lesion predictor over one study: shared by the infer task and the scoring method."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monai_car.inferers import (
    Lesion,
    LesionPrediction,
    LesionSampleSetPredictor,
    load_ct_volume,
    reorient,
    world_to_voxel,
)

from .errors import BAD_INPUT, NOT_FOUND, CARRequestError
from .outputs import lesion_statistics

__all__ = ["StudyPrediction", "load_study", "predict_lesions", "study_score"]


@dataclass(frozen=True)
class StudyPrediction:
    """The lesions of one study and their sample sets.

    Attributes:
        lesions: the lesions, in request order.
        predictions: one :class:`~monai_car.inferers.LesionPrediction` per lesion (sample set on its slab).
        statistics: one :func:`~.outputs.lesion_statistics` dict per lesion, with its id, centre and slab size.
    """

    lesions: list[Lesion]
    predictions: list[LesionPrediction]
    statistics: list[dict]


def load_study(image_path: str | Path, study: str) -> tuple[np.ndarray, np.ndarray]:
    """The study's CT in HU ``(X, Y, Z)`` and its voxel-to-RAS affine, read as the bundle's inference reads it.

    Raises:
        CARRequestError: (404) the file is gone; (422) it cannot be read as a 3D CT, or holds NaN / inf.
    """
    path = Path(image_path)
    if not path.exists():
        raise CARRequestError(NOT_FOUND, f"the image of study {study!r} ({path}) does not exist any more.")
    if path.is_file() and not path.name.endswith((".nii", ".nii.gz")):
        raise CARRequestError(
            BAD_INPUT,
            f"study {study!r} ({path.name}) is not NIfTI: the app reads CTs as .nii / .nii.gz (in HU), as the bundle "
            "does; convert it (e.g. 3D Slicer: Save as .nii.gz) and put it in the studies folder.",
        )
    try:
        data, affine = load_ct_volume(path)
    except (ValueError, OSError) as e:  # ImageReadError is a ValueError
        reason = str(e).rstrip(". ")
        raise CARRequestError(
            BAD_INPUT, f"study {study!r} cannot be read as a CT volume: {reason}. Replace it with a readable NIfTI."
        ) from e
    if not np.isfinite(data).all():
        raise CARRequestError(BAD_INPUT, f"study {study!r} ({path}) holds NaN or inf voxels; fix the image.")
    return data, affine


def predict_lesions(
    predictor: LesionSampleSetPredictor, data: np.ndarray, affine: np.ndarray, lesions: Sequence[Lesion]
) -> StudyPrediction:
    """Sample every lesion of a CT (in the file's orientation; it is reoriented as the bundle's inference does).

    Each lesion's noise restarts from the predictor's seed, so a lesion's samples do not depend on the others.

    Raises:
        CARRequestError: (422) a lesion outside the volume, or no lesion.
    """
    if not lesions:
        raise CARRequestError(BAD_INPUT, "no lesion to sample.")
    volume, oriented = reorient(data, affine, predictor.axcodes)
    predictions, statistics = [], []
    for lesion in lesions:
        try:
            prediction = predictor.predict_lesion(volume, oriented, lesion)
        except ValueError as e:
            raise CARRequestError(BAD_INPUT, f"lesion {lesion.lesion_id}: {e}") from e
        predictions.append(prediction)
        z0, z1 = prediction.z_range
        statistics.append(
            {
                "lesion_id": lesion.lesion_id,
                "center_ras_mm": [float(v) for v in lesion.center_ras],
                "center_voxel": [float(v) for v in world_to_voxel(affine, lesion.center_ras)[0]],
                "slab_shape": list(prediction.sample_set.spatial_shape),
                "num_slices": int(z1 - z0),
                **lesion_statistics(prediction.sample_set),
            }
        )
    return StudyPrediction(list(lesions), predictions, statistics)


def study_score(statistics: Sequence[dict]) -> float:
    """A study's uncertainty: the mean over its lesions of their mean mutual information (nats).

    Raises:
        ValueError: no lesion statistics.
    """
    if not statistics:
        raise ValueError("a study score needs at least one lesion.")
    return float(np.mean([s["mean_mutual_information_nats"] for s in statistics]))
