"""Readers for the image-file formats: the Probabilistic U-Net PNG release and folders of image + label JPEGs.

Each reader yields :class:`~preprocessing.importers_base.ImportCase` objects, or ``{"kind", "path", "reason"}`` dicts
for inputs it has to skip (the message names the file).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from monai_car.data.dicom_series import DataError

from .importers_base import ImportCase, binary_masks, normalise_split, safe_key

__all__ = ["read_image_label_folders", "read_grey", "read_prob_unet_png"]

_PNG_STEM = re.compile(r"z-(-?\d+(?:\.\d+)?)_c(\d+)")
_GT_STEM = re.compile(r"(z-(-?\d+(?:\.\d+)?)_c(\d+))_l(\d+)")
_LABEL_FILE = re.compile(r"label(\d+)_?\.(?:jpe?g|png)", re.IGNORECASE)
_IMAGE_FILE = re.compile(r"image_?(\d*)\.(?:jpe?g|png)", re.IGNORECASE)


def read_grey(path: Path) -> np.ndarray:
    """A greyscale image file as a 2D array (colour images are converted to luminance)."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("L", "I;16", "I"):
            img = img.convert("L")
        return np.asarray(img)


def _scale(arr: np.ndarray) -> np.ndarray:
    """Integer image -> float32 in [0, 1] by its dtype's range (8 or 16 bit)."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype in (np.uint16, np.int32) and arr.max() > 255:
        return arr.astype(np.float32) / 65535.0
    return arr.astype(np.float32) / 255.0


def _problem(path: Path, reason: str) -> dict:
    return {"kind": "case", "path": str(path), "reason": f"{path}: {reason}; skipped."}


def _split_dirs(src: Path, marker) -> list[tuple[Path, str | None]]:
    """``[(folder, split)]``: split subfolders of ``src`` when it has them, else ``[(src, None)]``."""
    subs = [d for d in sorted(src.iterdir()) if d.is_dir() and normalise_split(d.name) and marker(d)]
    return [(d, normalise_split(d.name)) for d in subs] if subs else [(src, None)]


def read_prob_unet_png(src: Path, label_threshold: float | None = None) -> Iterator[ImportCase | dict]:
    """Read ``[split/]images/<patient>/z-<z>_c<k>.png`` with ``[split/]gt/<patient>/z-<z>_c<k>_l<r>.png``.

    Args:
        src: the release's folder.
        label_threshold: ``None`` (default): a mask PNG must be binary, 0/1 or 0/255 (PNG is lossless), anything
            else raises :class:`DataError` naming the file and the values found; a number: a mask is
            ``value >= label_threshold``.
    """
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder (prob-unet-png expects [split/]images/ and [split/]gt/).")
    roots = _split_dirs(src, lambda d: (d / "images").is_dir())
    if not any((root / "images").is_dir() for root, _ in roots):
        raise FileNotFoundError(f"{src} has no images/ folder (nor train/val/test folders holding one).")
    for root, split in roots:
        for png in sorted((root / "images").rglob("*.png")):
            m = _PNG_STEM.fullmatch(png.stem)
            if m is None:
                yield _problem(png, "name is not z-<z>_c<k>.png")
                continue
            patient = png.parent.relative_to(root / "images").as_posix()
            gt_dir = root / "gt" / patient
            gts = {}
            for g in sorted(gt_dir.glob(f"{png.stem}_l*.png")) if gt_dir.is_dir() else []:
                gm = _GT_STEM.fullmatch(g.stem)
                if gm and gm.group(1) == png.stem:
                    gts[int(gm.group(4))] = g
            if not gts:
                yield _problem(png, f"no grader masks {gt_dir / (png.stem + '_l<r>.png')}")
                continue
            if sorted(gts) != list(range(len(gts))):
                yield _problem(png, f"grader masks are numbered {sorted(gts)}, expected 0..{len(gts) - 1}")
                continue
            try:
                image = read_grey(png)
                masks = []
                for r in range(len(gts)):
                    raw = read_grey(gts[r])
                    if raw.shape != image.shape:
                        raise ValueError(
                            f"mask {gts[r]} is {raw.shape[0]} x {raw.shape[1]}, its image {png} is "
                            f"{image.shape[0]} x {image.shape[1]}"
                        )
                    masks.append(binary_masks(raw, str(gts[r]), label_threshold, ((0, 1), (0, 255))))
            except DataError:  # non-binary labels: a property of the source, not of one case; stop the import
                raise
            except (OSError, ValueError) as err:
                yield _problem(png, str(err))
                continue
            name = Path(patient).name
            yield ImportCase(
                key=safe_key(split or "all", patient, png.stem),
                image=_scale(image),
                masks=masks,
                source=str(png),
                split=split,
                patient_id=name,
                nodule_id=f"{name}_c{m.group(2)}",
                slice_z=float(m.group(1)),
            )


def read_image_label_folders(src: Path, label_threshold: float | None = None) -> Iterator[ImportCase | dict]:
    """Read ``[split/]<case>/image_<k>.jpg`` with ``label0_.jpg`` .. ``label<R-1>_.jpg``.

    Args:
        src: the folder.
        label_threshold: a mask is ``value >= label_threshold``; ``None`` (default) means 128, half of 8-bit (JPEG
            is lossy, so its masks are thresholded).
    """
    threshold = 128 if label_threshold is None else label_threshold
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder (image-label-folders expects [split/]<case>/image_<k>.jpg).")

    def has_cases(d: Path) -> bool:
        return any(c.is_dir() for c in d.iterdir())

    for root, split in _split_dirs(src, has_cases):
        cases = [c for c in root.iterdir() if c.is_dir() and not normalise_split(c.name)]
        for case in sorted(cases, key=lambda c: (not c.name.isdigit(), int(c.name) if c.name.isdigit() else 0, c.name)):
            files = [f for f in case.iterdir() if f.is_file()]
            images = sorted(f for f in files if _IMAGE_FILE.fullmatch(f.name))
            labels = {int(m.group(1)): f for f in files if (m := _LABEL_FILE.fullmatch(f.name))}
            if len(images) != 1:
                yield _problem(case, f"expected one image_<k>.jpg, found {len(images)}")
                continue
            if not labels or sorted(labels) != list(range(len(labels))):
                yield _problem(
                    case, f"label files are numbered {sorted(labels)}, expected label0_.jpg .. label<R-1>_.jpg"
                )
                continue
            try:
                image = read_grey(images[0])
                masks = []
                for r in range(len(labels)):
                    raw = read_grey(labels[r])
                    if raw.shape != image.shape:
                        raise ValueError(
                            f"mask {labels[r]} is {raw.shape[0]} x {raw.shape[1]}, its image {images[0]} is "
                            f"{image.shape[0]} x {image.shape[1]}"
                        )
                    masks.append(raw >= threshold)
            except (OSError, ValueError) as err:
                yield _problem(case, str(err))
                continue
            index = _IMAGE_FILE.fullmatch(images[0].name).group(1)
            key = safe_key(root.name if split else "all", case.name)
            yield ImportCase(
                key=key,
                image=_scale(image),
                masks=masks,
                source=str(case),
                split=split,
                nodule_id=key,
                extra={"source_index": int(index) if index else None},
            )
