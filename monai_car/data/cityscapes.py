"""The official Cityscapes layout -> a 2D datalist (and optional resized copies), with the split the papers use.

Layout read (as the official archives ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` unpack)::

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   (cityscapesscripts'
                                                                                  csCreateTrainIdLabelImgs)

and optionally a folder of precomputed black-box predictions, one per image with the image's stem
``<city>_<seq>_<frame>`` (``<stem>.png`` / ``<stem>_leftImg8bit.png`` label maps, or ``<stem>.npy`` channel-first
arrays), anywhere below that folder.

Split (Kohl et al., CAR): the official ``val`` set is the test split; the cities ``darmstadt``, ``monchengladbach``
and ``ulm`` are held out of the official ``train`` set as the validation split; the rest of ``train`` is training.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from monai_car.transforms.presets_2d import BLACKBOX_FORMATS, BLACKBOX_KEY
from monai_car.transforms.spatial_2d import check_size_2d
from monai_car.utils.atomic import atomic_file
from monai_car.utils.cityscapes_classes import IGNORE_INDEX, NUM_CLASSES
from monai_car.utils.enums import CarKeys

from .segmentation_2d import write_segmentation_datalist

__all__ = [
    "CITYSCAPES_RESOLUTION",
    "CITYSCAPES_VALIDATION_CITIES",
    "CityscapesCase",
    "LABEL_SUFFIXES",
    "QUARTER_RESOLUTION",
    "build_cityscapes_datalist",
    "find_cityscapes_cases",
    "split_cityscapes_cases",
]

logger = logging.getLogger(__name__)

CITYSCAPES_RESOLUTION = (1024, 2048)
"""``(H, W)`` of the official images."""

QUARTER_RESOLUTION = (256, 512)
"""``(H, W)`` of the modified Cityscapes in the CAR reference code."""

CITYSCAPES_VALIDATION_CITIES = ("darmstadt", "monchengladbach", "ulm")
"""Cities of the official ``train`` set held out for validation."""

LABEL_SUFFIXES = {"label_ids": "_gtFine_labelIds.png", "train_ids": "_gtFine_labelTrainIds.png"}
"""File endings of the label maps, by label format."""

_IMAGE_SUFFIX = "_leftImg8bit.png"
_BLACKBOX_SUFFIXES = (".png", ".npy")


@dataclass(frozen=True)
class CityscapesCase:
    """One image of the official layout.

    Attributes:
        case_id: the stem ``<city>_<seq>_<frame>``.
        split: the official split (``train``, ``val``).
        city: the city folder.
        image, label: the files.
        blackbox: the black-box prediction file, or ``None``.
    """

    case_id: str
    split: str
    city: str
    image: Path
    label: Path
    blackbox: Path | None = None


def _blackbox_index(blackbox_dir: Path) -> dict[str, Path]:
    """stem -> prediction file of every ``.png`` / ``.npy`` below ``blackbox_dir``; two files of one stem fail."""
    if not blackbox_dir.is_dir():
        raise FileNotFoundError(
            f"black-box prediction folder {blackbox_dir} does not exist; give the folder holding one prediction per "
            "image, named after the image's stem (<city>_<seq>_<frame>.png or .npy)."
        )
    index: dict[str, Path] = {}
    for path in sorted(blackbox_dir.rglob("*")):
        if path.suffix not in _BLACKBOX_SUFFIXES or not path.is_file():
            continue
        stem = path.name[: -len(path.suffix)].removesuffix("_leftImg8bit")
        if stem in index:
            raise ValueError(f"two black-box predictions for image {stem}: {index[stem]} and {path}; keep one of them.")
        index[stem] = path
    return index


def _size_hw(path: Path) -> tuple[int, int]:
    """``(H, W)`` of a PNG (header only) or of a ``.npy`` array's last two axes."""
    if path.suffix == ".npy":
        shape = np.load(path, mmap_mode="r").shape
        if len(shape) not in (2, 3):
            raise ValueError(f"{path} holds an array of shape {shape}; store predictions as (H, W) or (K, H, W).")
        return int(shape[-2]), int(shape[-1])
    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e}; the file is truncated or not an image: replace it.") from e


def find_cityscapes_cases(
    root: str | os.PathLike,
    split: str,
    label_format: str = "label_ids",
    blackbox_dir: str | os.PathLike | None = None,
    resolution: Sequence[int] | None = None,
) -> list[CityscapesCase]:
    """The images of one official split with their label maps (and predictions), sizes checked.

    Args:
        root: the folder holding ``leftImg8bit`` and ``gtFine``.
        split: the official split, ``"train"`` or ``"val"`` (``"test"`` has no public labels).
        label_format: ``"label_ids"`` (``*_gtFine_labelIds.png``) or ``"train_ids"`` (``*_gtFine_labelTrainIds.png``).
        blackbox_dir: the folder of black-box predictions, or ``None``.
        resolution: ``(H, W)`` the data will be used at: a prediction may be at the image's size or at this one.

    Returns:
        the cases, sorted by city and stem.

    Raises:
        FileNotFoundError: a missing folder, label map or prediction (the message names it and the fix).
        ValueError: a label map or prediction whose size differs from its image's, or an empty split.
    """
    if label_format not in LABEL_SUFFIXES:
        raise ValueError(f"label_format must be one of {sorted(LABEL_SUFFIXES)}, got {label_format!r}.")
    root = Path(root).expanduser().absolute()
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    if not root.is_dir():
        raise FileNotFoundError(
            f"Cityscapes folder {root} does not exist; give the folder holding leftImg8bit/ and gtFine/."
        )
    for folder, archive in ((image_dir, "leftImg8bit_trainvaltest.zip"), (label_dir, "gtFine_trainvaltest.zip")):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} does not exist; unpack the official {archive} into {root} (it creates "
                f"{folder.relative_to(root).parts[0]}/{split}/<city>/)."
            )
    target = check_size_2d(resolution, "resolution")
    index = _blackbox_index(Path(blackbox_dir).expanduser().absolute()) if blackbox_dir is not None else None
    cases = []
    for image in sorted(image_dir.glob(f"*/*{_IMAGE_SUFFIX}")):
        city, stem = image.parent.name, image.name[: -len(_IMAGE_SUFFIX)]
        label = label_dir / city / f"{stem}{LABEL_SUFFIXES[label_format]}"
        if not label.is_file():
            fix = (
                "run cityscapesscripts' csCreateTrainIdLabelImgs (with CITYSCAPES_DATASET set to the root) or use "
                "label_format='label_ids'"
                if label_format == "train_ids"
                else "unpack the official gtFine_trainvaltest.zip, or remove the image"
            )
            raise FileNotFoundError(f"image {image} has no label map {label}; {fix}.")
        grid = _size_hw(image)
        if _size_hw(label) != grid:
            raise ValueError(
                f"label map {label} is {_size_hw(label)} (H, W) but its image {image} is {grid}; a label map must be "
                "at its image's resolution: replace it with the official file."
            )
        blackbox = None
        if index is not None:
            blackbox = index.get(stem)
            if blackbox is None:
                raise FileNotFoundError(
                    f"image {image} has no black-box prediction {stem}.png / {stem}.npy in {blackbox_dir}; predict "
                    "every image of the splits used, or leave blackbox_dir out."
                )
            allowed = {grid} | ({target} if target is not None else set())
            if _size_hw(blackbox) not in allowed:
                raise ValueError(
                    f"black-box prediction {blackbox} is {_size_hw(blackbox)} (H, W), but its image {image} is "
                    f"{grid}{f' and the resolution {target}' if target else ''}; predict at one of them."
                )
        cases.append(CityscapesCase(stem, split, city, image, label, blackbox))
    if not cases:
        raise ValueError(f"{image_dir} holds no <city>/*{_IMAGE_SUFFIX} images; check the folder (official layout).")
    return cases


def split_cityscapes_cases(
    train: Sequence[CityscapesCase],
    val: Sequence[CityscapesCase],
    validation_cities: Sequence[str] = CITYSCAPES_VALIDATION_CITIES,
) -> dict[str, list[CityscapesCase]]:
    """The papers' split: ``training`` (official train without ``validation_cities``), ``validation`` (those cities
    of official train), ``test`` (official val).

    Raises:
        ValueError: a validation city that official train does not hold (a typo), or an empty split.
    """
    cities = {c.city for c in train}
    missing = sorted(set(validation_cities) - cities)
    if missing:
        raise ValueError(
            f"validation cities {missing} are not among the train cities {sorted(cities)}; check their spelling."
        )
    out = {
        "training": [c for c in train if c.city not in validation_cities],
        "validation": [c for c in train if c.city in validation_cities],
        "test": list(val),
    }
    empty = [k for k, v in out.items() if not v]
    if empty:
        raise ValueError(f"the splits {empty} would be empty; the train set needs cities besides {validation_cities}.")
    return out


def _write_resized(src: Path, dst: Path, size: tuple[int, int], nearest: bool, overwrite: bool) -> Path:
    """``src`` resized to ``size`` ``(H, W)`` at ``dst`` (atomic); an existing ``dst`` of that size is kept."""
    if dst.is_file() and not overwrite and _size_hw(dst) == size:
        return dst
    with Image.open(src) as img:
        out = img.resize((size[1], size[0]), Image.NEAREST if nearest else Image.BILINEAR)
    with atomic_file(dst, suffix=".png") as tmp:
        out.save(tmp, format="PNG")
    return dst


def build_cityscapes_datalist(
    root: str | os.PathLike,
    output_dir: str | os.PathLike,
    resolution: Sequence[int] | None = QUARTER_RESOLUTION,
    label_format: str = "label_ids",
    blackbox_dir: str | os.PathLike | None = None,
    blackbox_format: str = "train_ids",
    write_resized: bool = False,
    validation_cities: Sequence[str] = CITYSCAPES_VALIDATION_CITIES,
    datalist_name: str = "datalist.json",
    overwrite: bool = False,
) -> Path:
    """Write ``output_dir/datalist_name`` (atomically) for the official layout, and optionally resized copies.

    Without ``write_resized`` the datalist names the original files (absolute paths) and records ``resolution``:
    the 2D transform presets resize on the fly (``spatial_size``). With ``write_resized`` the images (bilinear), the
    label maps and PNG predictions (nearest) are written at ``resolution`` under ``output_dir`` in the same
    layout (``leftImg8bit/``, ``gtFine/``, ``blackbox/``; ``.npy`` predictions are named in place), and the
    datalist names them relative to ``output_dir``. Existing copies of the right size are kept unless
    ``overwrite``.

    Args:
        root: the folder holding ``leftImg8bit`` and ``gtFine``.
        output_dir: where the datalist (and copies) go.
        resolution: ``(H, W)``, default quarter resolution ``(256, 512)``; ``None`` keeps the images' size.
        label_format: ``"label_ids"`` or ``"train_ids"``.
        blackbox_dir: the folder of predictions (see :func:`find_cityscapes_cases`), or ``None``.
        blackbox_format: how the predictions are stored (``monai_car.transforms.presets_2d.BLACKBOX_FORMATS``).
        write_resized: write resized copies.
        validation_cities: cities of official train held out for validation.
        datalist_name: the datalist's file name.
        overwrite: rewrite existing copies.

    Returns:
        the datalist's path.
    """
    target = check_size_2d(resolution, "resolution")
    if blackbox_format not in BLACKBOX_FORMATS:
        raise ValueError(f"blackbox_format must be one of {BLACKBOX_FORMATS}, got {blackbox_format!r}.")
    if write_resized and target is None:
        raise ValueError("write_resized needs a resolution (H, W), e.g. (256, 512).")
    found = {s: find_cityscapes_cases(root, s, label_format, blackbox_dir, target) for s in ("train", "val")}
    splits = split_cityscapes_cases(found["train"], found["val"], validation_cities)
    out_dir = Path(output_dir).expanduser().absolute()
    if target is not None:
        image = found["train"][0].image
        h, w = _size_hw(image)
        if abs(target[0] / target[1] - h / w) > 0.01 * h / w:
            raise ValueError(
                f"resolution {target} has another aspect ratio than the images ({h}, {w}), e.g. {image}; choose one "
                f"of the images' shape, such as {QUARTER_RESOLUTION} for Cityscapes."
            )
    rows: dict[str, list[dict]] = {}
    for name, cases in splits.items():
        rows[name] = []
        for n, case in enumerate(cases):
            row = {CarKeys.CASE_ID: case.case_id, "city": case.city, "official_split": case.split}
            image, label, blackbox = case.image, case.label, case.blackbox
            if write_resized:
                rel = Path(case.split) / case.city
                image = _write_resized(image, out_dir / "leftImg8bit" / rel / image.name, target, False, overwrite)
                label = _write_resized(label, out_dir / "gtFine" / rel / label.name, target, True, overwrite)
                if blackbox is not None and blackbox.suffix == ".png":
                    dst = out_dir / "blackbox" / rel / f"{case.case_id}.png"
                    blackbox = _write_resized(blackbox, dst, target, True, overwrite)
                if (n + 1) % 500 == 0:
                    logger.info("%s: %d / %d cases resized", name, n + 1, len(cases))
            row[CarKeys.IMAGE], row[CarKeys.LABEL] = str(image), str(label)
            if blackbox is not None:
                row[BLACKBOX_KEY] = str(blackbox)
            rows[name].append(row)
    metadata = {
        "name": "cityscapes",
        "source": str(Path(root).expanduser().absolute()),
        "label_format": label_format,
        "resolution": list(target) if target is not None else None,
        "stored_resolution": list(target) if write_resized else None,
        "num_classes": NUM_CLASSES,
        "ignore_index": IGNORE_INDEX,
        "validation_cities": list(validation_cities),
    }
    if blackbox_dir is not None:
        metadata["blackbox_format"] = blackbox_format
    return write_segmentation_datalist(out_dir / datalist_name, rows, metadata)


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m monai_car.data.cityscapes ROOT OUTPUT_DIR [...]``: :func:`build_cityscapes_datalist` from a shell."""
    parser = argparse.ArgumentParser(prog="python -m monai_car.data.cityscapes", description=__doc__.split("\n")[0])
    parser.add_argument("root", help="folder holding leftImg8bit/ and gtFine/")
    parser.add_argument("output_dir", help="where datalist.json (and resized copies) go")
    parser.add_argument("--resolution", type=int, nargs=2, default=list(QUARTER_RESOLUTION), metavar=("H", "W"))
    parser.add_argument("--label-format", choices=sorted(LABEL_SUFFIXES), default="label_ids")
    parser.add_argument("--blackbox-dir", default=None, help="folder of precomputed black-box predictions")
    parser.add_argument("--blackbox-format", default="train_ids")
    parser.add_argument("--write-resized", action="store_true", help="write resized copies under output_dir")
    args = parser.parse_args(argv)
    path = build_cityscapes_datalist(
        args.root,
        args.output_dir,
        tuple(args.resolution),
        args.label_format,
        args.blackbox_dir,
        args.blackbox_format,
        args.write_resized,
    )
    print(path)
    return path


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
