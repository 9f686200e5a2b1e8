"""MONAI's NIfTI writer, writing atomically.

For ``SaveImaged(..., writer="monai_car.data.image_writer.AtomicNibabelWriter")`` (a dotted path, as MONAI takes it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from monai.data import NibabelWriter

from monai_car.utils.atomic import atomic_file

__all__ = ["AtomicNibabelWriter"]


class AtomicNibabelWriter(NibabelWriter):
    """``monai.data.NibabelWriter`` whose files appear complete or not at all.

    The image is written under a temporary name beside the target and renamed onto it
    (:func:`monai_car.utils.atomic_file`): an interrupted run never leaves a truncated ``.nii.gz`` that a later run
    would fail to read. Same arguments and output as ``NibabelWriter``.
    """

    def write(self, filename: str | os.PathLike, verbose: bool = False, **obj_kwargs: Any) -> None:
        """Write the image set by ``set_data_array`` / ``set_metadata`` to ``filename``, atomically.

        Raises:
            ValueError: ``filename`` names no file.
        """
        name = Path(filename).name
        suffix = ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix
        with atomic_file(filename, suffix=suffix) as tmp:
            super().write(tmp, verbose=verbose, **obj_kwargs)
