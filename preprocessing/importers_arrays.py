"""Readers for the array formats: the Probabilistic U-Net PyTorch port's pickle and PHiSeg's hdf5.

Each reader yields :class:`~preprocessing.importers_base.ImportCase` objects, or ``{"kind", "path", "reason"}`` dicts
for inputs it has to skip. The pickle is read with a restricted unpickler that only rebuilds numpy arrays and plain
containers, so a pickle cannot run code on import.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from monai_car.data.dicom_series import DataError

from .importers_base import ImportCase, binary_masks, check_label_values, label_values, normalise_split, safe_key

__all__ = ["SafeUnpickler", "read_phiseg_hdf5", "read_pickle"]

_PATIENT = re.compile(r"LIDC-IDRI-\d{4}")
_Z = re.compile(r"z-(-?\d+(?:\.\d+)?)")
_ALLOWED_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes", "bool"}
_ALLOWED_NUMPY = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}


class SafeUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays/scalars and builtin containers; anything else raises ``UnpicklingError``."""

    def find_class(self, module: str, name: str):
        if module == "builtins" and name in _ALLOWED_BUILTINS:
            return super().find_class(module, name)
        if module == "collections" and name == "OrderedDict":
            return super().find_class(module, name)
        if module.split(".")[0] == "numpy" and name in _ALLOWED_NUMPY:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays and containers are allowed.")


def read_pickle(src: Path, label_threshold: float | None = None) -> Iterator[ImportCase | dict]:
    """Read ``data_lidc.pickle``: ``{slice_name: {"image", "masks", "series_uid"}}`` (images in [0, 1] or uint8).

    Args:
        src: the pickle.
        label_threshold: ``None`` (default): masks must be binary 0/1 (or bool), anything else raises
            :class:`DataError` naming the slice and the values; a number: a mask is ``value >= label_threshold``.
    """
    if not src.is_file():
        raise FileNotFoundError(f"{src} is not a file (the pickle format expects data_lidc.pickle).")
    try:
        with open(src, "rb") as f:
            data = SafeUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError) as err:
        raise DataError(f"{src}: cannot read it as a data_lidc.pickle ({type(err).__name__}: {err}).") from err
    if not isinstance(data, dict):
        raise DataError(f"{src}: expected a dict keyed by slice name, got {type(data).__name__}.")
    for name in sorted(data, key=str):
        value = data[name]
        where = f"{src} [{name!r}]"
        if not isinstance(value, dict) or not {"image", "masks"} <= set(value):
            keys = sorted(value) if isinstance(value, dict) else type(value).__name__
            yield {
                "kind": "case",
                "path": where,
                "reason": f"{where}: expected keys image, masks (and series_uid), got {keys}; skipped.",
            }
            continue
        image = np.asarray(value["image"])
        if image.dtype == np.uint8:
            image = image.astype(np.float32) / 255.0
        image = image.astype(np.float32)
        if image.size and (image.min() < -1e-6 or image.max() > 1 + 1e-6):
            yield {
                "kind": "case",
                "path": where,
                "reason": f"{where}: image values span [{image.min():.3g}, "
                f"{image.max():.3g}], expected [0, 1]; skipped.",
            }
            continue
        masks = [binary_masks(m, f"{where} mask {r}", label_threshold) for r, m in enumerate(value["masks"])]
        text = str(name)
        patient = _PATIENT.search(text)
        z = _Z.search(text)
        uid = value.get("series_uid")
        yield ImportCase(
            key=safe_key("pickle", text),
            image=image,
            masks=masks,
            source=where,
            patient_id=patient.group(0) if patient else None,
            series_uid=str(uid) if uid is not None else None,
            nodule_id=text,
            slice_z=float(z.group(1)) if z else None,
        )


def read_phiseg_hdf5(src: Path, label_threshold: float | None = None) -> Iterator[ImportCase | dict]:
    """Read PHiSeg's hdf5: groups (``train``/``val``/``test``) with ``images`` (N, H, W), ``labels`` (N, H, W, R)
    and ``uids`` (N,). PHiSeg stores ``image - 0.5``: a group whose images go below 0 gets 0.5 added back.

    Args:
        src: the hdf5 file.
        label_threshold: ``None`` (default): a group's labels must be binary 0/1, anything else (e.g. 0/2) raises
            :class:`DataError` naming the file, the group and the values found; a number: a mask is
            ``label >= label_threshold``.
    """
    import h5py

    if not src.is_file():
        raise FileNotFoundError(f"{src} is not a file (the phiseg-hdf5 format expects data_lidc.hdf5).")
    try:
        f = h5py.File(src, "r")
    except OSError as err:
        raise DataError(f"{src}: cannot open it as hdf5 ({err}).") from err
    with f:
        groups = [(name, f[name]) for name in sorted(f) if isinstance(f[name], h5py.Group)]
        if not groups and "images" in f:
            groups = [("", f)]
        for name, group in groups:
            split = normalise_split(name) if name else None
            where = f"{src} [{name or '/'}]"
            if name and split is None:
                yield {"kind": "group", "path": where, "reason": f"{where}: group name is not train/val/test; skipped."}
                continue
            if "images" not in group or "labels" not in group:
                yield {
                    "kind": "group",
                    "path": where,
                    "reason": f"{where}: needs datasets images and labels, has {sorted(group)}; skipped.",
                }
                continue
            images, labels = group["images"], group["labels"]
            if images.ndim != 3 or labels.ndim != 4 or labels.shape[:3] != images.shape:
                yield {
                    "kind": "group",
                    "path": where,
                    "reason": f"{where}: labels {labels.shape} do not match images "
                    f"{images.shape} (expected (N, H, W) and (N, H, W, R)); skipped.",
                }
                continue
            if label_threshold is None:
                check_label_values(label_values(labels), f"{where} labels")
            threshold = 1 if label_threshold is None else label_threshold
            uids = np.asarray(group["uids"]) if "uids" in group else None
            low = min((float(np.min(images[i : i + 512])) for i in range(0, images.shape[0], 512)), default=0.0)
            offset = 0.5 if low < -1e-6 else 0.0
            for i in range(images.shape[0]):
                case_name = f"{name or 'all'}-{i:05d}"
                uid = None if uids is None else str(int(uids[i]))
                yield ImportCase(
                    key=safe_key("phiseg", case_name),
                    image=np.asarray(images[i], dtype=np.float32) + np.float32(offset),
                    masks=[np.asarray(labels[i, ..., r]) >= threshold for r in range(labels.shape[3])],
                    source=f"{src} [{name or '/'}][{i}]",
                    split=split,
                    nodule_id=case_name,
                    group=uid,
                    extra={"source_uid_hash": uid, "image_offset_added": offset},
                )
