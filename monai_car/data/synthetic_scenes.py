"""A generated street-scene data set with a known label distribution: the embedded default of the Cityscapes bundle.

Each scene is a small RGB image (default 64 x 128) of a street drawn in the Cityscapes class layout
(:mod:`monai_car.utils.cityscapes_classes`): sky, a band of buildings with vegetation blobs, a sidewalk strip, the
road, cars, persons, poles with traffic signs, and a void strip at the bottom (the ego vehicle). Every class is drawn
in its Cityscapes colour with per-image brightness jitter and per-pixel texture noise, so the image tells the classes
apart. The label maps hold the ORIGINAL classes only: the switchable classes (sidewalk, person, car, vegetation,
road) turn into their copies on the fly (:class:`~monai_car.transforms.RandSwitchableClassFlipd`, probabilities
8/17 .. 4/17), so every pixel's true distribution is known and the test set has the 32 weighted modes of
:func:`~monai_car.metrics.mode_label_maps`.

A deterministic, deliberately imperfect "black box" prediction comes with each scene: objects smaller than
``min_object_area`` pixels are missed (the class underneath is predicted), cars are dilated by one pixel, persons
eroded by one, poles and signs are predicted as building, void as road. It never predicts a copy class (it is a
segmenter of the original classes), so F learns the flip probabilities from the labels, not from its input.

Files (``build_synthetic_scenes``): ``images/<case>.png`` (RGB), ``labels/<case>.png`` and ``blackbox/<case>.png``
(class ids, label format ``"classes"``), ``datalist.json`` (splits ``training``, ``validation``, ``test``; read with
:func:`~monai_car.data.load_segmentation_datalist`). :func:`ensure_synthetic_scenes` builds it once into the cache
(like the LIDC demo) and reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from monai_car.utils.cityscapes_classes import FLIP_PROBABILITIES, NUM_CLASSES, SWITCHABLE_TRAIN_IDS, VOID, class_colors
from monai_car.utils.validation import check_positive_int

from ._demo_cache import is_complete_build, publish_build
from .demo import demo_cache_root
from .segmentation_2d import write_segmentation_datalist

__all__ = [
    "DEFAULT_COUNTS",
    "SCENE_CLASSES",
    "SYNTHETIC_SCENES_NAME",
    "build_synthetic_scenes",
    "ensure_synthetic_scenes",
    "render_scene",
]

SYNTHETIC_SCENES_NAME = "synthetic_scenes_v1"
"""The cache folder name of the default build."""

SCENE_CLASSES: dict[str, int] = {
    "road": 0,
    "sidewalk": 1,
    "building": 2,
    "pole": 5,
    "traffic sign": 7,
    "vegetation": 8,
    "sky": 10,
    "person": 11,
    "car": 13,
}
"""The Cityscapes trainIds a scene draws (5 of them switchable: road, sidewalk, vegetation, person, car)."""

DEFAULT_COUNTS: dict[str, int] = {"training": 960, "validation": 48, "test": 64}
"""Scenes per split of the default build (many training scenes: F sees each scene's flips only a few times, so it
learns the flip probabilities rather than each scene's own flip frequencies)."""

_ROAD, _SIDEWALK, _BUILDING, _POLE, _SIGN = 0, 1, 2, 5, 7
_VEGETATION, _SKY, _PERSON, _CAR = 8, 10, 11, 13


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _box(h: int, w: int, top: int, left: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[max(top, 0) : max(top + height, 0), max(left, 0) : max(left + width, 0)] = True
    return mask


def _layout(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray]]]:
    """(label map, background-layer map, objects ``[(class, mask)]`` in drawing order) of one street scene."""
    label = np.full((h, w), _ROAD, dtype=np.uint8)
    sky_end = int(rng.integers(h * 3 // 20, h * 6 // 20 + 1))
    horizon = int(rng.integers(h * 9 // 20, h * 11 // 20 + 1))
    label[:sky_end] = _SKY
    label[sky_end:horizon] = _BUILDING
    if rng.random() < 0.85:
        label[horizon : horizon + int(rng.integers(max(2, h // 16), max(3, h // 8) + 1))] = _SIDEWALK
    void_rows = max(1, h // 16)
    label[h - void_rows :] = VOID
    background = label.copy()
    objects: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(0, 3))):  # vegetation blobs on the building band
        ry, rx = rng.uniform(h / 14, h / 7), rng.uniform(h / 10, h / 5)
        objects.append((_VEGETATION, _ellipse(h, w, rng.uniform(sky_end, horizon), rng.uniform(0, w), ry, rx)))
    for _ in range(int(rng.integers(0, 3))):  # poles with a sign on top
        left, top = int(rng.integers(0, w - 2)), int(rng.integers(sky_end, horizon - 2))
        bottom = int(rng.integers(horizon, h - void_rows))
        objects.append((_POLE, _box(h, w, top, left, bottom - top, max(1, w // 64))))
        if rng.random() < 0.6:
            objects.append((_SIGN, _box(h, w, top - h // 16, left - w // 64, h // 16, w // 24)))
    for _ in range(int(rng.integers(0, 4))):  # cars on the road
        height, width = int(rng.uniform(h / 9, h / 5)), int(rng.uniform(w / 10, w / 5))
        top = int(rng.uniform(horizon, h - void_rows - height / 2))
        objects.append((_CAR, _box(h, w, top, int(rng.uniform(-width / 3, w - width / 2)), height, width)))
    for _ in range(int(rng.integers(0, 4))):  # persons on the sidewalk and road
        ry, rx = rng.uniform(h / 12, h / 6), rng.uniform(w / 90, w / 40)
        objects.append(
            (_PERSON, _ellipse(h, w, rng.uniform(horizon - ry, h - void_rows - ry), rng.uniform(0, w), ry, rx))
        )
    for cls, mask in objects:
        label[mask & (label != VOID)] = cls
    return label, background, objects


def _black_box(label: np.ndarray, background: np.ndarray, min_object_area: int) -> np.ndarray:
    """The deterministic imperfect prediction of a scene's original classes (see the module docstring)."""
    pred = label.copy()
    for cls in (_PERSON, _CAR, _VEGETATION, _POLE, _SIGN):
        parts, n = ndimage.label(label == cls)
        for i in range(1, n + 1):
            part = parts == i
            if part.sum() < min_object_area:
                pred[part] = background[part] if cls != _VEGETATION else _BUILDING
    car = ndimage.binary_dilation(pred == _CAR) & (label != VOID)
    pred[car] = _CAR
    person = pred == _PERSON
    rim = person & ~ndimage.binary_erosion(person)
    pred[rim] = np.where(background == VOID, _ROAD, background)[rim]
    pred[(pred == _POLE) | (pred == _SIGN)] = _BUILDING
    pred[pred == VOID] = _ROAD
    return pred


def render_scene(
    rng: np.random.Generator, size: tuple[int, int] = (64, 128), min_object_area: int = 12
) -> dict[str, np.ndarray]:
    """Draw one scene.

    Args:
        rng: the source of every random choice (layout, colours, noise).
        size: ``(H, W)``, at least ``(32, 32)``.
        min_object_area: objects smaller than this many pixels are missed by the black box.

    Returns:
        ``{"image": (H, W, 3) uint8, "label": (H, W) uint8 original classes and void 24,
        "blackbox": (H, W) uint8 original classes}``.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}."
        )
    h, w = (int(s) for s in size)
    if h < 32 or w < 32:
        raise ValueError(f"size must be at least (32, 32), got {tuple(size)}.")
    check_positive_int(min_object_area, "min_object_area")
    label, background, _ = _layout(rng, h, w)
    colours = class_colors().astype(np.float32)
    tint = rng.uniform(0.75, 1.15)
    image = colours[label] * tint
    # per-class texture: smooth noise of class-specific strength, plus pixel noise
    smooth = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (h, w, 3)), sigma=(2.0, 2.0, 0.0))
    strength = np.where(np.isin(label, [_BUILDING, _VEGETATION]), 25.0, 12.0)[..., None]
    image += strength * smooth / max(float(smooth.std()), 1e-6) + rng.normal(0.0, 6.0, (h, w, 3))
    image[label == VOID] = 30.0 + rng.normal(0.0, 4.0, (int((label == VOID).sum()), 3))
    return {
        "image": np.clip(image, 0, 255).astype(np.uint8),
        "label": label,
        "blackbox": _black_box(label, background, int(min_object_area)),
    }


def _write_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", optimize=False)


def _build(stage: Path, counts: dict[str, int], size: tuple[int, int], seed: int, min_object_area: int) -> None:
    rng = np.random.default_rng(seed)
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, n in counts.items():
        entries = []
        for i in range(n):
            case = f"{split}_{i:04d}"
            scene = render_scene(rng, size, min_object_area)
            for key, folder in (("image", "images"), ("label", "labels"), ("blackbox", "blackbox")):
                _write_png(scene[key], stage / folder / f"{case}.png")
            entries.append(
                {
                    "image": str(stage / "images" / f"{case}.png"),
                    "label": str(stage / "labels" / f"{case}.png"),
                    "blackbox": str(stage / "blackbox" / f"{case}.png"),
                    "case_id": case,
                }
            )
        splits[split] = entries
    metadata = {
        "name": "monai-car synthetic street scenes (known label distribution)",
        "label_format": "classes",
        "blackbox_format": "classes",
        "resolution": list(size),
        "num_classes": NUM_CLASSES,
        "ignore_index": VOID,
        "switchable": list(SWITCHABLE_TRAIN_IDS),
        "flip_probabilities": list(FLIP_PROBABILITIES),
        "labels_are_unflipped": True,
        "seed": seed,
    }
    write_segmentation_datalist(stage / "datalist.json", splits, metadata)


def build_synthetic_scenes(
    output_dir: str | os.PathLike,
    num_training: int = DEFAULT_COUNTS["training"],
    num_validation: int = DEFAULT_COUNTS["validation"],
    num_test: int = DEFAULT_COUNTS["test"],
    size: tuple[int, int] = (64, 128),
    seed: int = 0,
    min_object_area: int = 12,
) -> Path:
    """Generate the data set into ``output_dir`` (published atomically: a failed build leaves nothing behind).

    Args:
        output_dir: the folder to create (replaced if it exists).
        num_training, num_validation, num_test: scenes per split (each >= 1).
        size: ``(H, W)`` of every scene.
        seed: the one seed of every scene.
        min_object_area: see :func:`render_scene`.

    Returns:
        ``output_dir``, holding ``datalist.json``.
    """
    counts = {"training": num_training, "validation": num_validation, "test": num_test}
    for name, n in counts.items():
        check_positive_int(n, f"num_{name}")
    size = (int(size[0]), int(size[1]))
    params = _params(counts, size, seed, min_object_area)
    folder = Path(output_dir).expanduser().absolute()
    return publish_build(folder, params, lambda stage: _build(stage, counts, size, int(seed), int(min_object_area)))


def _params(counts: dict[str, int], size: tuple[int, int], seed: int, min_object_area: int) -> dict[str, Any]:
    return {"version": 1, "counts": counts, "size": list(size), "seed": int(seed), "min_object_area": min_object_area}


def ensure_synthetic_scenes(
    cache_dir: str | os.PathLike | None = None,
    num_training: int = DEFAULT_COUNTS["training"],
    num_validation: int = DEFAULT_COUNTS["validation"],
    num_test: int = DEFAULT_COUNTS["test"],
    size: tuple[int, int] = (64, 128),
    seed: int = 0,
    force: bool = False,
) -> Path:
    """The cached synthetic data set, built on first use (a few seconds, deterministic).

    Args:
        cache_dir: the cache root (``$MONAI_CAR_CACHE`` or ``~/.cache/monai_car`` when ``None``); the data set is
            ``<root>/synthetic_scenes_v1`` for the default parameters, ``<root>/synthetic_scenes_v1-<digest>``
            otherwise.
        num_training, num_validation, num_test, size, seed: see :func:`build_synthetic_scenes`.
        force: rebuild even when a complete build with these parameters exists.

    Returns:
        the data set folder (``datalist.json`` inside).
    """
    counts = {"training": num_training, "validation": num_validation, "test": num_test}
    for name, n in counts.items():
        check_positive_int(n, f"num_{name}")
    size = (int(size[0]), int(size[1]))
    params = _params(counts, size, seed, 12)
    name = SYNTHETIC_SCENES_NAME
    if params != _params(DEFAULT_COUNTS, (64, 128), 0, 12):
        name += "-" + hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    folder = demo_cache_root(cache_dir) / name
    if not force and is_complete_build(folder, params):
        return folder
    return publish_build(folder, params, lambda stage: _build(stage, counts, size, int(seed), 12))
