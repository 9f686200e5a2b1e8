"""The build cache of the demo data sets: stamped, atomically published folders and reproducible NIfTI bytes.

Shared by :mod:`monai_car.data.demo` (the 2D crops) and :mod:`monai_car.data.demo_volumes` (the CT volumes).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_car.utils.atomic import make_staging_dir

__all__ = ["BUILD_STAMP", "is_complete_build", "publish_build", "save_nifti_reproducible"]

BUILD_STAMP = "demo_stamp.json"
"""The file in a built folder that records the parameters it was built with."""


def is_complete_build(folder: Path, params: dict) -> bool:
    """Whether ``folder`` holds a finished build stamped with exactly ``params``."""
    try:
        return json.loads((folder / BUILD_STAMP).read_text()) == params
    except (OSError, ValueError):
        return False


def save_nifti_reproducible(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write NIfTI (qform and sform = ``affine``); ``.nii.gz`` is gzipped in one call with a fixed timestamp, so
    the bytes are reproducible and writing is fast."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    raw = img.to_bytes()
    path.write_bytes(gzip.compress(raw, compresslevel=1, mtime=0) if path.name.endswith(".gz") else raw)


def publish_build(folder: Path, params: dict, build: Callable[[Path], None]) -> Path:
    """Build into a temporary folder beside ``folder``, stamp it, move it into place (atomic; safe if racing)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = make_staging_dir(folder)  # 0o777 & ~umask, not mkdtemp's 0700: the data set is readable by others
    try:
        build(stage)
        (stage / BUILD_STAMP).write_text(json.dumps(params, indent=1) + "\n")
        if is_complete_build(folder, params):  # another process finished the same build meanwhile: keep its folder
            shutil.rmtree(stage, ignore_errors=True)
            return folder
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(folder, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(stage, folder)
        except OSError:
            if not is_complete_build(folder, params):  # another process won the race with a different build: fail
                raise
            shutil.rmtree(stage, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return folder
