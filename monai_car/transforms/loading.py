"""Image loading whose errors name the file: MONAI's ``LoadImaged`` lets a truncated ``.nii.gz`` end in a bare
``EOFError: Compressed file ended before the end-of-stream marker was reached``, with no file named."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.transforms import LoadImaged

__all__ = ["ImageReadError", "NamedLoadImaged", "image_read_error", "read_nifti"]


class ImageReadError(ValueError):
    """An image file exists but cannot be read (truncated, corrupt or of an unsupported format)."""


def image_read_error(path: str | Path, error: BaseException, what: str = "image") -> ImageReadError | None:
    """The :class:`ImageReadError` to raise for ``error`` while reading ``path``, or ``None`` to re-raise it as is.

    ``None`` when ``path`` does not exist (the caller's own "missing file" message applies) or when ``error``'s
    message already names the file.

    Args:
        path: the file being read.
        error: what the reader raised.
        what: the file's role in the message (``"image"``, ``"CT volume"``, ...).
    """
    path = str(path)
    if not Path(path).is_file() or path in str(error):
        return None
    return ImageReadError(
        f"cannot read {what} {path}: {type(error).__name__}: {error}. The file is truncated, corrupt or not an "
        "image (an interrupted copy or download?): replace it, or rebuild the data set."
    )


class NamedLoadImaged(LoadImaged):
    """MONAI's ``LoadImaged``, with read errors of an existing file re-raised as :class:`ImageReadError` naming it.

    Same arguments and output as ``LoadImaged`` (it is one: MONAI Label and other tools that look for
    ``LoadImaged`` in a pre-processing chain find it).
    """

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict[Hashable, Any]:
        """Load every key's file; see ``monai.transforms.LoadImaged``.

        Raises:
            ImageReadError: an existing file could not be read; the message names it and the reader's error.
        """
        try:
            return super().__call__(data, reader)
        except Exception as e:
            for key in self.key_iterator(dict(data)):
                path = data[key]
                if isinstance(path, (str, Path)):
                    error = image_read_error(path, e)
                    if error is not None:
                        raise error from e
            raise


def read_nifti(path: str | Path, what: str = "image", dtype: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file's voxels and affine, with read errors naming the file.

    Args:
        path: an existing NIfTI file (the caller reports a missing one in its own words).
        what: the file's role in the message (``"CT volume"``, ``"lesion mask"``, ...).
        dtype: the array's dtype (``None``: the file's).

    Returns:
        ``(data, affine)``: the voxel array as stored (no reorientation) and the 4x4 voxel-to-world affine.

    Raises:
        ImageReadError: the file is truncated, corrupt or not NIfTI; the message names it and the reader's error.
    """
    try:
        img = nib.load(str(path))
        return np.asarray(img.dataobj, dtype=dtype), np.asarray(img.affine, dtype=float)
    except Exception as e:
        error = image_read_error(path, e, what)
        if error is None:
            raise
        raise error from e
