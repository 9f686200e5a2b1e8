"""Where the lesions of a request are: clicked points, world points, an uploaded mask, or the server's lesion CSV.

In order of precedence (the first one a request holds is used):

1. ``foreground``: voxel points ``[[i, j, k], ...]`` in the CT file's own grid, as MONAI Label's deepgrow tasks take
   them (3D Slicer sends the IJK of the clicked points); one lesion per point;
2. ``lesions``: ``[{"lesion_id": "n1", "x": .., "y": .., "z": ..}, ...]`` world coordinates in mm, in
   ``lesions_frame`` (``LPS``, DICOM, by default; ``RAS`` for 3D Slicer / NIfTI), the rows of the bundle's CSV;
3. an uploaded mask (the multipart ``label`` file, which MONAI Label saves in the temporary folder) on the CT's
   grid: one lesion per connected component, as the bundle's ``--lesion_source mask``;
4. the server's lesion CSV (``<studies>/lesions.csv`` or ``--conf lesions_csv``): the rows whose ``study`` is the
   study's id, as the bundle's ``--lesion_source csv``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from monai_car.inferers import Lesion, lesions_from_csv, lesions_from_mask

from .errors import BAD_INPUT, CARRequestError

__all__ = ["LESION_SOURCES", "lesions_for_request", "lesions_from_points", "lesions_from_world", "csv_lesions"]

LESION_SOURCES = ("foreground", "lesions", "mask", "csv")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _point(value: object, where: str) -> np.ndarray:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3:
        raise CARRequestError(BAD_INPUT, f"{where} must be 3 numbers, got {value!r}.")
    try:
        point = np.array([float(v) for v in value])
    except (TypeError, ValueError) as e:
        raise CARRequestError(BAD_INPUT, f"{where} must be 3 numbers, got {value!r}.") from e
    if not np.isfinite(point).all():
        raise CARRequestError(BAD_INPUT, f"{where} must be finite, got {value!r}.")
    return point


def lesions_from_points(
    points: object, ct_affine: np.ndarray, ct_shape: Sequence[int], study: str
) -> tuple[list[Lesion], list[list[float]]]:
    """One lesion per clicked voxel point of the CT file's grid (deepgrow's ``foreground``).

    Returns:
        the lesions (``point1``, ``point2``, ..., centred on the points' world positions) and the points as floats.

    Raises:
        CARRequestError: (422) not a list of 3-number points, or a point outside the volume (with its shape).
    """
    if not isinstance(points, Sequence) or isinstance(points, str) or not points:
        raise CARRequestError(BAD_INPUT, f"foreground must be a non-empty list of [i, j, k] points, got {points!r}.")
    lesions, voxels = [], []
    shape = [int(n) for n in ct_shape[:3]]
    for k, value in enumerate(points, start=1):
        voxel = _point(value, f"foreground point {k}")
        if not all(-0.5 <= c < n - 0.5 for c, n in zip(voxel, shape)):
            raise CARRequestError(
                BAD_INPUT,
                f"foreground point {k} {voxel.tolist()} lies outside study {study!r} (voxel grid {shape}, indices "
                "from 0): click inside the CT; points are voxel indices (IJK) of the study's image, not mm.",
            )
        world = np.asarray(ct_affine, dtype=float) @ np.append(voxel, 1.0)
        lesions.append(Lesion(f"point{k}", world[:3], None, study))
        voxels.append(voxel.tolist())
    return lesions, voxels


def lesions_from_world(items: object, frame: str, study: str) -> list[Lesion]:
    """Lesions from JSON rows ``{"lesion_id", "x", "y", "z"}`` in mm (``frame`` LPS or RAS).

    Raises:
        CARRequestError: (422) a malformed row, a repeated id or an unknown frame.
    """
    frame = str(frame).upper()
    if frame not in ("LPS", "RAS"):
        raise CARRequestError(BAD_INPUT, f"lesions_frame must be LPS or RAS, got {frame!r}.")
    if not isinstance(items, Sequence) or isinstance(items, str) or not items:
        raise CARRequestError(BAD_INPUT, f"lesions must be a non-empty list of {{lesion_id, x, y, z}}, got {items!r}.")
    lesions, seen = [], set()
    for k, item in enumerate(items, start=1):
        if not isinstance(item, Mapping) or not {"x", "y", "z"} <= set(item):
            raise CARRequestError(BAD_INPUT, f"lesions[{k - 1}] must be an object with x, y, z (mm), got {item!r}.")
        lesion_id = str(item.get("lesion_id", f"lesion{k}"))
        if lesion_id in seen or not lesion_id or "/" in lesion_id or lesion_id.startswith("."):
            raise CARRequestError(BAD_INPUT, f"lesions[{k - 1}]: lesion_id {lesion_id!r} is repeated or not a name.")
        seen.add(lesion_id)
        point = _point([item["x"], item["y"], item["z"]], f"lesions[{k - 1}] ({lesion_id})")
        lesions.append(Lesion(lesion_id, _LPS_TO_RAS @ point if frame == "LPS" else point, None, study))
    return lesions


def csv_lesions(csv_path: Path | None, frame: str, study: str) -> list[Lesion]:
    """The lesions of ``study`` in the bundle-format CSV (``lesion_id,x,y,z,study``); empty when it has none.

    Raises:
        CARRequestError: (422) the CSV cannot be read or has no ``study`` column.
    """
    if csv_path is None or not Path(csv_path).is_file():
        return []
    try:
        rows = lesions_from_csv(csv_path, frame=frame)
    except ValueError as e:
        raise CARRequestError(BAD_INPUT, f"the server's lesion CSV cannot be used: {e}") from e
    if any(lesion.study is None for lesion in rows):
        raise CARRequestError(
            BAD_INPUT, f"{csv_path} needs a 'study' column naming each lesion's study (image id) in this datastore."
        )
    return [lesion for lesion in rows if lesion.study == study]


def _is_upload(label: object) -> bool:
    """Whether ``label`` is a file the infer endpoint saved from the request's ``label`` upload (MONAI Label puts
    uploads in the temporary folder; a path elsewhere, or Slicer's segment name, is not read)."""
    if not isinstance(label, str) or not os.path.isabs(label) or not os.path.isfile(label):
        return False
    return Path(label).resolve().parent == Path(tempfile.gettempdir()).resolve()


def lesions_for_request(
    request: Mapping,
    ct_affine: np.ndarray,
    ct_shape: Sequence[int],
    study: str,
    csv_path: Path | None,
    frame: str,
) -> tuple[list[Lesion], str, dict]:
    """The lesions a request asks for (see the module docstring for the sources and their order).

    Args:
        request: the infer request (``foreground``, ``lesions``, ``lesions_frame``, ``label``).
        ct_affine: the CT file's voxel-to-RAS affine.
        ct_shape: the CT's ``(X, Y, Z)``.
        study: the study id.
        csv_path: the server's lesion CSV.
        frame: the CSV's (and the default ``lesions`` rows') frame.

    Returns:
        ``(lesions, source, details)``: ``source`` one of :data:`LESION_SOURCES`; ``details`` e.g. the clicked points.

    Raises:
        CARRequestError: (422) no lesion at all (saying the four ways to give one), or a bad one.
    """
    if request.get("foreground"):
        lesions, voxels = lesions_from_points(request["foreground"], ct_affine, ct_shape, study)
        return lesions, "foreground", {"points_voxel": voxels}
    if request.get("lesions"):
        frame_here = request.get("lesions_frame", frame)
        return lesions_from_world(request["lesions"], frame_here, study), "lesions", {"lesions_frame": frame_here}
    label = request.get("label")
    if _is_upload(label):
        try:
            return lesions_from_mask(label, reference_affine=ct_affine), "mask", {}
        except ValueError as e:
            raise CARRequestError(BAD_INPUT, f"the uploaded lesion mask cannot be used: {e}") from e
    lesions = csv_lesions(csv_path, frame, study)
    if lesions:
        return lesions, "csv", {"lesions_csv": str(csv_path)}
    raise CARRequestError(
        BAD_INPUT,
        f"no lesion given for study {study!r}: click a point on it (params foreground: [[i, j, k]] voxel indices), "
        "list world points (params lesions: [{x, y, z}] mm), upload a lesion mask as the 'label' file, or add rows "
        f"for this study to the lesion CSV {csv_path} (columns lesion_id,x,y,z,study).",
    )
