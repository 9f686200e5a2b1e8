"""The class layout of the modified Cityscapes (SPEC section 3): one module that every part of monai-car imports.

Label ids of a label map (and channels of a prediction):

- ``0 .. 18``: the 19 Cityscapes evaluation classes, numbered by their ``trainId`` and named as in
  ``cityscapesscripts.helpers.labels`` (road, sidewalk, building, ...);
- ``19 .. 23``: the copies of the switchable classes, in this order: ``sidewalk2`` (copy of trainId 1),
  ``person2`` (11), ``car2`` (13), ``vegetation2`` (8), ``road2`` (0); a switchable class turns into its copy with
  probability 8/17, 7/17, 6/17, 5/17, 4/17 (one Bernoulli per image and class);
- ``24``: void, the ignore index (cityscapesscripts' ``trainId`` 255 and -1: unlabeled, ego vehicle, license
  plate, ...).

So ``NUM_CLASSES = 25`` channels. The labelId -> class table is built from cityscapesscripts' own table
(:func:`label_id_lookup`), never written by hand.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers import labels as cs_labels

__all__ = [
    "COPY_IDS",
    "COPY_NAMES",
    "CLASS_NAMES",
    "CITYSCAPES_IGNORE_TRAIN_IDS",
    "FLIP_PROBABILITIES",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "NUM_TRAIN_CLASSES",
    "SWITCHABLE_CLASS_IDS",
    "SWITCHABLE_TRAIN_IDS",
    "TRAIN_CLASS_NAMES",
    "VOID",
    "class_colors",
    "label_id_lookup",
    "train_id_lookup",
]

NUM_TRAIN_CLASSES = 19
"""The Cityscapes evaluation classes (``trainId`` 0 .. 18)."""

SWITCHABLE_TRAIN_IDS: tuple[int, ...] = (1, 11, 13, 8, 0)
"""The switchable classes' trainIds, in flip order: sidewalk, person, car, vegetation, road."""

COPY_IDS: tuple[int, ...] = (19, 20, 21, 22, 23)
"""The label id each switchable class turns into (same order as :data:`SWITCHABLE_TRAIN_IDS`)."""

FLIP_PROBABILITIES: tuple[float, ...] = (8 / 17, 7 / 17, 6 / 17, 5 / 17, 4 / 17)
"""The probability that each switchable class turns into its copy (same order as :data:`SWITCHABLE_TRAIN_IDS`)."""

VOID = 24
"""The void label, ignored by every loss and metric."""

IGNORE_INDEX = VOID
"""Alias of :data:`VOID` under the name the losses and trainers take (``ignore_index``)."""

NUM_CLASSES = 25
"""Label ids / prediction channels: 19 classes, 5 copies, void."""

CITYSCAPES_IGNORE_TRAIN_IDS: tuple[int, ...] = (255, -1)
"""cityscapesscripts' trainIds of the classes left out of the evaluation; they map to :data:`VOID`."""

SWITCHABLE_CLASS_IDS: tuple[int, ...] = tuple(sorted(SWITCHABLE_TRAIN_IDS + COPY_IDS))
"""The 10 classes of the mode-weighted GED: the 5 switchable originals and their 5 copies."""


def _train_class_names() -> tuple[str, ...]:
    names: dict[int, str] = {}
    for label in cs_labels.labels:
        if 0 <= label.trainId < NUM_TRAIN_CLASSES:
            if label.trainId in names:
                raise RuntimeError(
                    f"cityscapesscripts maps both {names[label.trainId]!r} and {label.name!r} to trainId "
                    f"{label.trainId}; monai-car expects one class per trainId (cityscapesscripts >= 2.2)."
                )
            names[label.trainId] = label.name
    missing = sorted(set(range(NUM_TRAIN_CLASSES)) - set(names))
    if missing:
        raise RuntimeError(f"cityscapesscripts' label table has no class for trainIds {missing} (need >= 2.2).")
    return tuple(names[t] for t in range(NUM_TRAIN_CLASSES))


TRAIN_CLASS_NAMES: tuple[str, ...] = _train_class_names()
"""The 19 evaluation classes' names from cityscapesscripts, by trainId ("road", "sidewalk", ...)."""

COPY_NAMES: tuple[str, ...] = tuple(f"{TRAIN_CLASS_NAMES[t]}2" for t in SWITCHABLE_TRAIN_IDS)
"""The copies' names: "sidewalk2", "person2", "car2", "vegetation2", "road2"."""

CLASS_NAMES: tuple[str, ...] = TRAIN_CLASS_NAMES + COPY_NAMES + ("void",)
"""All 25 label names, by label id."""


def label_id_lookup() -> np.ndarray:
    """The table labelId -> monai-car label, from cityscapesscripts' ``labels`` (``*_gtFine_labelIds.png``).

    Returns:
        ``(256,)`` uint8: entry ``i`` is the trainId of labelId ``i`` (0 .. 18), or :data:`VOID` for the classes
        cityscapesscripts leaves out of the evaluation and for values it does not define. Index it with a label
        map: ``label_id_lookup()[label_ids]``.
    """
    table = np.full(256, VOID, dtype=np.uint8)
    for label in cs_labels.labels:
        if 0 <= label.id < 256 and 0 <= label.trainId < NUM_TRAIN_CLASSES:
            table[label.id] = label.trainId
    return table


def train_id_lookup() -> np.ndarray:
    """The table trainId -> monai-car label (``*_gtFine_labelTrainIds.png`` as cityscapesscripts'
    ``createTrainIdLabelImgs`` writes it: 0 .. 18, and 255 for the ignored classes).

    Returns:
        ``(256,)`` uint8: identity on 0 .. 18, :data:`VOID` elsewhere (255 included).
    """
    table = np.full(256, VOID, dtype=np.uint8)
    table[:NUM_TRAIN_CLASSES] = np.arange(NUM_TRAIN_CLASSES, dtype=np.uint8)
    return table


def class_colors() -> np.ndarray:
    """An RGB colour per label id, for pictures.

    Returns:
        ``(NUM_CLASSES, 3)`` uint8: cityscapesscripts' colours for the 19 classes, the inverted colour of the
        original for each copy (so a copy is told apart from its original at a glance), black for void.
    """
    colors = np.zeros((NUM_CLASSES, 3), dtype=np.uint8)
    for label in cs_labels.labels:
        if 0 <= label.trainId < NUM_TRAIN_CLASSES:
            colors[label.trainId] = label.color
    for original, copy in zip(SWITCHABLE_TRAIN_IDS, COPY_IDS):
        colors[copy] = 255 - colors[original]
    return colors
