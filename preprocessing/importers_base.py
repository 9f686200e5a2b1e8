"""What the importers share: the case record every reader yields, split-name normalisation and file-name-safe keys.

:mod:`preprocessing.importers` (the driver) and the readers (:mod:`preprocessing.importers_arrays`,
:mod:`preprocessing.importers_images`) both import this module, and the readers never import the driver, so the
imports run one way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from monai_car.data.dicom_series import DataError

__all__ = ["ImportCase", "binary_masks", "check_label_values", "label_values", "normalise_split", "safe_key"]

_SPLIT_NAMES = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
    "testing": "test",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def normalise_split(name: str) -> str | None:
    """``train``/``training`` -> ``training``, ``val``/``valid``/``validation`` -> ``validation``,
    ``test``/``testing`` -> ``test``; anything else -> ``None``."""
    return _SPLIT_NAMES.get(name.lower())


@dataclass
class ImportCase:
    """One crop read from a source format.

    Attributes:
        key: a unique, file-name-safe name (used for the output file names).
        image: ``(H, W)`` float32 in [0, 1], ``[row, column]`` layout.
        masks: one ``(H, W)`` bool mask per grader.
        source: the file(s) it came from (for messages).
        split: the source's split (``training``/``validation``/``test``) or ``None``.
        patient_id, series_uid, nodule_id, slice_z: metadata when the format holds it.
        group: what whole-group splitting keeps together when the source has no split (default: patient, else
            series, else the case itself).
        extra: other fields copied into the datalist item (e.g. the source index).
    """

    key: str
    image: np.ndarray
    masks: list[np.ndarray]
    source: str
    split: str | None = None
    patient_id: str | None = None
    series_uid: str | None = None
    nodule_id: str | None = None
    slice_z: float | None = None
    group: str | None = None
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        """Raise :class:`DataError` naming the source when shapes or values are wrong."""
        if self.image.ndim != 2:
            raise DataError(f"{self.source}: image must be 2D, got shape {self.image.shape}; skipped.")
        if not self.masks:
            raise DataError(f"{self.source}: no grader masks; skipped.")
        for r, m in enumerate(self.masks):
            if m.shape != self.image.shape:
                raise DataError(
                    f"{self.source}: grader {r}'s mask is {m.shape[0]} x {m.shape[1] if m.ndim > 1 else '?'}, its "
                    f"image {self.image.shape[0]} x {self.image.shape[1]}; masks must match their image; skipped."
                )
        if not np.isfinite(self.image).all():
            raise DataError(f"{self.source}: image has NaN or infinite values; skipped.")
        low, high = float(self.image.min()), float(self.image.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise DataError(f"{self.source}: image values span [{low:.3g}, {high:.3g}], expected [0, 1]; skipped.")


def safe_key(*parts: object) -> str:
    """A file-name-safe key from parts (``/`` and unsafe characters become ``_``)."""
    return _UNSAFE.sub("_", "_".join(str(p) for p in parts)).strip("._")


def label_values(labels: object, limit: int = 8, chunk: int = 512) -> list[float]:
    """Up to ``limit`` distinct values of ``labels`` (an array or an hdf5 dataset, read ``chunk`` rows at a time)."""
    if getattr(labels, "dtype", None) == np.bool_:
        return [0.0, 1.0]
    n = int(labels.shape[0]) if getattr(labels, "ndim", 0) else 1
    seen: set[float] = set()
    for i in range(0, max(n, 1), chunk):
        part = np.asarray(labels[i : i + chunk] if getattr(labels, "ndim", 0) else labels)
        seen.update(float(v) for v in np.unique(part))
    return sorted(seen, key=lambda v: (np.isnan(v), v))[:limit]


def check_label_values(
    values: list[float], where: str, allowed: tuple[tuple[float, ...], ...] = ((0.0, 1.0),)
) -> tuple[float, ...]:
    """The encoding of ``allowed`` that holds every one of ``values``, or a :class:`DataError` naming ``where``.

    A mask file or dataset whose labels are not binary (e.g. 0/2, several classes, soft masks) is never binarised
    silently: the message names the source and the values found and says how to map them explicitly.
    """
    for encoding in allowed:
        if set(values) <= set(encoding):
            return encoding
    shown = ", ".join(f"{v:g}" for v in values)
    expected = " or ".join("/".join(f"{v:g}" for v in e) for e in allowed)
    raise DataError(
        f"{where}: grader labels hold the values {{{shown}}}, expected binary masks ({expected}); labels are not "
        "binarised silently: give --label-threshold T (import_dataset(label_threshold=T)) to take label >= T as "
        "the grader's mask (e.g. 1 for every non-zero label), or fix the source."
    )


def binary_masks(
    raw: np.ndarray,
    where: str,
    threshold: float | None,
    allowed: tuple[tuple[float, ...], ...] = ((0.0, 1.0),),
) -> np.ndarray:
    """``raw`` as a bool mask: ``raw >= threshold`` when one is given, else ``raw == max(encoding)`` for the one of
    the ``allowed`` binary encodings (e.g. 0/1, 0/255) that holds every value, else a :class:`DataError` (see
    :func:`check_label_values`)."""
    raw = np.asarray(raw)
    if threshold is not None:
        return raw >= threshold
    if raw.dtype == np.bool_:
        return raw
    encoding = check_label_values(label_values(raw), where, allowed)
    return raw == max(encoding)
