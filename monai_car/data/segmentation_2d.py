"""Datalists of 2D segmentation cases: image, label map and an optional precomputed black-box prediction.

The file is a JSON datalist in the form of MONAI's decathlon datalists (read with
``monai.data.load_decathlon_datalist``): top-level metadata fields plus one list of entries per split::

    {
      "label_format": "label_ids", "blackbox_format": "train_ids", "resolution": [256, 512],
      "training":   [{"case_id": "aachen_000000_000019", "image": "leftImg8bit/...png", "label": "gtFine/...png",
                      "blackbox": "blackbox/...png"}, ...],
      "validation": [...],
      "test":       [...]
    }

Paths are relative to the datalist's folder (or absolute). ``label_format`` / ``blackbox_format`` name how the maps
are stored (:data:`~monai_car.transforms.spatial_2d.LABEL_FORMATS`, or ``"probabilities"`` for ``(K, H, W)``
``.npy`` channels); :func:`monai_car.transforms.presets_2d.get_train_transforms_2d` takes them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.data import load_decathlon_datalist

from monai_car.transforms.presets_2d import BLACKBOX_KEY
from monai_car.utils.atomic import write_json_atomic
from monai_car.utils.enums import CarKeys

from .datalist import make_case_id

__all__ = ["DATALIST_2D_KEYS", "datalist_metadata", "load_segmentation_datalist", "write_segmentation_datalist"]

DATALIST_2D_KEYS = (CarKeys.IMAGE, CarKeys.LABEL, BLACKBOX_KEY)
"""The path fields of an entry: image (required), label map, black-box prediction."""

_FIX = (
    "fix the entry, or rebuild the datalist (for the official Cityscapes layout: "
    "monai_car.data.cityscapes.build_cityscapes_datalist)"
)


def _read_json(datalist: Path) -> dict:
    if not datalist.is_file():
        others = sorted(p.name for p in datalist.parent.glob("*.json")) if datalist.parent.is_dir() else []
        raise FileNotFoundError(
            f"datalist {datalist} does not exist (JSON files beside it: {others or 'none'}); {_FIX}."
        )
    try:
        with open(datalist) as f:
            content = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{datalist} is not valid JSON: {e}.") from e
    if not isinstance(content, dict):
        raise ValueError(f"{datalist} must hold a JSON object with split keys, got {type(content).__name__}.")
    return content


def _splits(content: Mapping) -> list[str]:
    return [k for k, v in content.items() if isinstance(v, list) and all(isinstance(e, dict) for e in v)]


def datalist_metadata(datalist: str | os.PathLike) -> dict[str, Any]:
    """The datalist's top-level fields that are not splits (``label_format``, ``resolution``, ...)."""
    content = _read_json(Path(datalist).expanduser().absolute())
    splits = set(_splits(content))
    return {k: v for k, v in content.items() if k not in splits}


def load_segmentation_datalist(
    datalist: str | os.PathLike,
    split: str = "training",
    base_dir: str | os.PathLike | None = None,
    require_label: bool = True,
    require_blackbox: bool = False,
    check_files: bool = True,
    allow_empty: bool = False,
) -> list[dict]:
    """Load one split of a 2D datalist as MONAI dictionaries with absolute paths and a ``case_id``.

    Args:
        datalist: the JSON file.
        split: the split's key (``"training"``, ``"validation"``, ``"test"``, ...).
        base_dir: the folder relative paths start from (``None``: the datalist's folder).
        require_label: every entry must name a ``label``.
        require_blackbox: every entry must name a ``blackbox`` prediction.
        check_files: every named file must exist.
        allow_empty: accept a split with no entries.

    Returns:
        the entries, each with ``image`` (and ``label`` / ``blackbox`` when given) as absolute paths and a
        file-name-safe ``case_id`` (the entry's own, else one made from the image path, as
        :func:`~monai_car.data.make_case_id`).

    Raises:
        FileNotFoundError: the datalist or a file it names is missing (the message names both and the fix).
        ValueError: malformed JSON, an unknown split, an entry without a required path, repeated case ids.
    """
    path = Path(datalist).expanduser().absolute()
    content = _read_json(path)
    splits = _splits(content)
    if split not in content:
        raise ValueError(f"{path} has no split {split!r}; its splits are {splits}. Pick one of them.")
    if split not in splits:
        raise ValueError(f"{path}: {split!r} must be a list of entries (objects with 'image', 'label', ...).")
    if not content[split]:
        if allow_empty:
            return []
        raise ValueError(f"{path}: split {split!r} has no entries; {_FIX}.")
    root = Path(base_dir).expanduser().absolute() if base_dir is not None else path.parent
    items = load_decathlon_datalist(path, is_segmentation=True, data_list_key=split, base_dir=root)
    required = (
        [CarKeys.IMAGE] + ([CarKeys.LABEL] if require_label else []) + ([BLACKBOX_KEY] if require_blackbox else [])
    )
    seen: dict[str, int] = {}
    out = []
    for i, item in enumerate(items):
        entry = f"entry {i} of split {split!r}"
        for key in required:
            if key not in item:
                raise ValueError(f"{path}: {entry} has no '{key}' path (it has {sorted(item)}); {_FIX}.")
        item = dict(item)
        for key in DATALIST_2D_KEYS:
            if key not in item:
                continue
            value = item[key]
            if not isinstance(value, str) or not value:
                raise ValueError(f"{path}: {entry} has an invalid '{key}' path {value!r} (a non-empty string).")
            full = os.path.normpath(os.path.join(root, value))  # MONAI leaves missing non-image paths relative
            if check_files and not os.path.isfile(full):
                raise FileNotFoundError(f"{path}: {entry} names {key} {value!r}, but {full} does not exist; {_FIX}.")
            item[key] = full
        item[CarKeys.CASE_ID] = make_case_id(item, root)
        case = item[CarKeys.CASE_ID]
        if case in seen:
            raise ValueError(
                f"{path}: entries {seen[case]} and {i} of split {split!r} have the same case id {case!r}; give them "
                "distinct 'case_id' fields."
            )
        seen[case] = i
        out.append(item)
    return out


def _relative(value: object, root: Path, what: str) -> str:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ValueError(f"{what} must be a non-empty path, got {value!r}.")
    full = Path(value).expanduser().absolute()
    try:
        return full.relative_to(root).as_posix()
    except ValueError:
        return str(full)


def write_segmentation_datalist(
    path: str | os.PathLike,
    splits: Mapping[str, Sequence[Mapping[str, Any]]],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a 2D datalist atomically (see :mod:`monai_car.utils.atomic`), paths relative to its folder.

    Args:
        path: the JSON file to write.
        splits: split name -> entries (``image``, ``label``, ``blackbox`` paths, absolute or relative to the current
            folder, plus any JSON fields such as ``case_id``). Paths inside the datalist's folder are written
            relative to it (the folder can be moved), others absolute.
        metadata: top-level fields (``label_format``, ``blackbox_format``, ``resolution``, ...).

    Returns:
        ``path``.

    Raises:
        ValueError: an entry without ``image``, a metadata field clashing with a split, a split that is not a list.
    """
    target = Path(path).expanduser().absolute()
    root = target.parent
    content: dict[str, Any] = dict(metadata or {})
    for name, entries in splits.items():
        if name in content:
            raise ValueError(f"split {name!r} clashes with a metadata field of the same name; rename one of them.")
        if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, Sequence):
            raise ValueError(f"split {name!r} must be a list of entries, got {type(entries).__name__}.")
        rows = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping) or CarKeys.IMAGE not in entry:
                raise ValueError(f"entry {i} of split {name!r} must be a mapping with an 'image' path, got {entry!r}.")
            row = dict(entry)
            for key in DATALIST_2D_KEYS:
                if key in row:
                    row[key] = _relative(row[key], root, f"entry {i} of split {name!r}: '{key}'")
            rows.append(row)
        content[name] = rows
    return write_json_atomic(target, content)
