"""The ``car`` infer task: CAR's plausible outlines and uncertainty maps of the lesions of a study, in the CT's frame.

A MONAI Label :class:`~monailabel.tasks.infer.basic_infer.BasicInferTask`: its ``__call__`` runs the pre-transform
(:class:`LoadCTVolumed`, the bundle's CT reader), :meth:`CARInferTask.run_inferer` (the bundle's
:class:`~monai_car.inferers.LesionSampleSetPredictor` over each lesion of the request) and :meth:`CARInferTask.writer`
(a ``.seg.nrrd`` file plus the result JSON), and times each stage.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import MapTransform
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.utils.others.generic import strtobool

from monai_car.inferers import study_id_of

from .bundle import CARAppSettings, CARBundle
from .errors import BAD_INPUT, CARRequestError
from .lesions import lesions_for_request
from .outputs import (
    CHANNEL_SCALE,
    channel_colors,
    channel_names,
    lesion_box,
    lesion_channels,
    paste_max,
    write_seg_nrrd,
)
from .predict import load_study, predict_lesions, study_score

__all__ = ["CARInferTask", "LoadCTVolumed", "MAX_FULL_GRID_BYTES"]

MAX_FULL_GRID_BYTES = 1 << 30
"""A ``full_grid`` result larger than this (channels x CT voxels x 2 bytes) is refused: use the cropped default."""


class LoadCTVolumed(MapTransform):
    """Load the CT at ``data[key]`` (a path) as the bundle's inference does: HU ``(X, Y, Z)`` float32 + its affine.

    Sets ``data[key]`` to the array, ``data[f"{key}_affine"]`` to the voxel-to-RAS affine and ``data["study"]`` to the
    study id (the file name without ``.nii(.gz)``, MONAI Label's local datastore id) unless already set.

    Raises:
        CARRequestError: (404) no such file; (422) unreadable, not 3D, or NaN / inf voxels.
    """

    def __init__(self, keys: Hashable | Sequence[Hashable] = "image") -> None:
        super().__init__(keys)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            if not isinstance(path, (str, Path)) or not str(path):
                raise CARRequestError(BAD_INPUT, f"no image to run on (got {path!r}); give a study id as 'image'.")
            study = d.get("study") or study_id_of(path)
            d["study"] = study
            d[key], d[f"{key}_affine"] = load_study(path, study)
        return d


class CARInferTask(BasicInferTask):
    """CAR inference for the lesions of one study (see :mod:`.lesions` for how a request names them).

    Request parameters (all optional, defaults from ``--conf``): ``num_samples`` (S, 1..500), ``seed``,
    ``full_grid`` (return the CT's whole grid instead of the lesions' bounding box), ``foreground`` / ``lesions`` /
    ``lesions_frame`` / the ``label`` upload (the lesions).

    Returns (``__call__``): the path of a ``.seg.nrrd`` file with ``2 + S + 1`` named channels on the CT's voxel grid
    (consensus, S samples, entropy and mutual information in milli-nats; :mod:`.outputs`) and the result JSON: per
    lesion the presence frequency, the volume distribution (mean, std, 5 and 95 %), the mean entropy and mutual
    information, and the study's mean mutual information.

    Args:
        settings: the app's settings.
        bundle: the bundle (network, predictor settings).
        type: ``InferType.DEEPGROW`` (3D Slicer's point-click section) or ``InferType.SEGMENTATION`` (its "Run"
            button: lesions from the CSV or an uploaded mask).
        description: shown by clients.
    """

    def __init__(
        self,
        settings: CARAppSettings,
        bundle: CARBundle,
        type: str | InferType = InferType.DEEPGROW,
        description: str = "CAR: plausible lesion outlines and their uncertainty (click a lesion)",
    ) -> None:
        self.car_settings = settings
        self.bundle = bundle
        super().__init__(
            path=str(settings.model_path),
            network=None,
            type=type,
            labels=["lesion"],
            dimension=3,
            description=description,
            config={
                "num_samples": settings.num_samples,
                "seed": settings.seed,
                "full_grid": False,
                "lesions_frame": settings.lesions_frame,
            },
        )

    def is_valid(self) -> bool:
        """Always listed: without a model a request answers 503 naming the fix, rather than the task vanishing."""
        return True

    def pre_transforms(self, data: Mapping | None = None) -> list:
        """Load the study's CT (HU, the file's own grid and affine)."""
        return [LoadCTVolumed(keys=self.input_key)]

    def post_transforms(self, data: Mapping | None = None) -> list:
        """None: :meth:`run_inferer` already returns the channels on the CT's grid."""
        return []

    def _get_network(self, device: str, data: Mapping | None) -> Any:
        return self.bundle.network(device)

    def run_inferer(self, data: dict, convert_to_batch: bool = True, device: str = "cpu") -> dict:
        """Sample the request's lesions and put their channels on the CT's grid (``data["pred"]``, ``"result"``)."""
        network = self._get_network(device, data)
        image, ct_affine, study = data[self.input_key], data[f"{self.input_key}_affine"], data["study"]
        lesions, source, details = lesions_for_request(
            data, ct_affine, image.shape, study, self.car_settings.lesions_csv, self.car_settings.lesions_frame
        )
        predictor = self.bundle.predictor(network, data.get("num_samples"), data.get("seed"), device)
        names = channel_names(predictor.num_samples)
        try:
            full_grid = strtobool(data.get("full_grid", False))
        except (TypeError, ValueError) as e:
            raise CARRequestError(BAD_INPUT, f"full_grid must be true or false, got {data.get('full_grid')!r}.") from e
        size = len(names) * int(np.prod(image.shape[:3])) * 2
        if full_grid and size > MAX_FULL_GRID_BYTES:
            raise CARRequestError(
                BAD_INPUT,
                f"full_grid would return {size / 2**30:.1f} GiB ({len(names)} channels x {list(image.shape)}); "
                "leave full_grid false (the file then covers the lesions' bounding box on the CT's grid).",
            )
        prediction = predict_lesions(predictor, image, ct_affine, lesions)
        if full_grid:
            lo, hi = np.zeros(3, dtype=int), np.asarray(image.shape[:3])
        else:
            slabs = [(p.sample_set.spatial_shape, p.sample_set.affine) for p in prediction.predictions]
            lo, hi = lesion_box(image.shape[:3], ct_affine, slabs)
        grid_affine = np.asarray(ct_affine, dtype=float).copy()
        grid_affine[:3, 3] = ct_affine[:3, :3] @ lo + ct_affine[:3, 3]
        channels = np.zeros((len(names), *(hi - lo)), dtype=np.uint16)
        for p in prediction.predictions:
            paste_max(channels, grid_affine, lesion_channels(p.sample_set), p.sample_set.affine)
        data["pred"] = channels
        data["pred_affine"] = grid_affine
        data["pred_offset"] = [int(v) for v in lo]
        data["channel_names"] = names
        data["result"] = {
            "study": study,
            "num_samples": predictor.num_samples,
            "seed": predictor.seed,
            "lesion_source": source,
            **details,
            "background_points_ignored": len(data.get("background") or []),
            "model": {"path": str(self.car_settings.model_path), "sha256_16": self.bundle.model_version()},
            "channels": names,
            "channel_scale": {name: 1.0 / CHANNEL_SCALE for name in names[-2:]},
            "grid": {
                "shape": [int(v) for v in channels.shape[1:]],
                "offset_voxel": data["pred_offset"],
                "ct_shape": [int(v) for v in image.shape[:3]],
                "full_grid": bool(full_grid),
                "affine_ras": grid_affine.tolist(),
            },
            "lesions": prediction.statistics,
            "study_mean_mutual_information_nats": study_score(prediction.statistics),
        }
        return data

    def writer(self, data: dict, extension: str | None = None, dtype: Any = None) -> tuple[str, dict]:
        """Write ``data["pred"]`` as a ``.seg.nrrd`` in the system's temporary folder (the server sends, then removes
        it). Always ``.seg.nrrd`` and uint16 (the multi-channel format 3D Slicer reads; ``result_extension`` /
        ``result_dtype`` requests such as Slicer's ``.nrrd`` / ``uint8`` are recorded, not followed)."""
        names = data["channel_names"]
        path = Path(tempfile.gettempdir()) / f"car_{data['study']}_{uuid.uuid4().hex[:12]}.seg.nrrd"
        write_seg_nrrd(
            path,
            data["pred"],
            data["pred_affine"],
            names,
            channel_colors(len(names) - 3),
            reference_offset=data["pred_offset"],
            extra_fields={"MONAICAR_ChannelScale": " ".join(f"{n}={1.0 / CHANNEL_SCALE}" for n in names[-2:])},
        )
        result = dict(data["result"])
        requested = {k: data.get(k) for k in ("result_extension", "result_dtype") if data.get(k)}
        if requested:
            result["ignored_result_format"] = requested
        return str(path), result
