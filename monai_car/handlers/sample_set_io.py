"""File helpers of the sample-set writer: NIfTI with a given affine, JSON, and an atomically replaced case folder."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data.utils import to_affine_nd

from monai_car.utils.atomic import atomic_dir

__all__ = ["check_case_id", "resolve_affine", "save_nifti", "save_json", "atomic_case_dir", "to_numpy"]


def to_numpy(x: object, name: str) -> np.ndarray:
    """A tensor (``MetaTensor`` included) or array as a numpy array, or a clear ``TypeError``."""
    if isinstance(x, torch.Tensor):
        x = (x.as_tensor() if hasattr(x, "as_tensor") else x).detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}.")
    return x


def check_case_id(case_id: object) -> str:
    """Return ``case_id`` if it can name a folder inside the output folder, else raise ``ValueError``."""
    if not isinstance(case_id, str):
        raise ValueError(f"case_id must be a string, got {type(case_id).__name__} {case_id!r}.")
    bad = (not case_id) or case_id != case_id.strip() or case_id.startswith(".") or "\0" in case_id
    if bad or "/" in case_id or "\\" in case_id or os.sep in case_id:
        raise ValueError(
            f"case_id {case_id!r} cannot name a case folder: it must be non-empty, not start with '.', and hold no "
            "path separator or surrounding spaces (e.g. use monai_car.data.make_case_id)."
        )
    return case_id


def resolve_affine(image: object, affine: object | None, spatial_dims: int) -> tuple[np.ndarray, str]:
    """The 4x4 voxel-to-world affine to write, and where it came from.

    Order: the explicit ``affine`` (``(r+1, r+1)`` for ``r`` spatial dims, or 4x4); else the image's ``MetaTensor``
    affine (``meta["affine"]``, MONAI's current affine, which follows crops, pads and flips; a 2D affine is embedded
    in 4x4 as MONAI does); else ``meta["original_affine"]``; else the identity (source ``"identity"``: the output
    will not overlay on the CT).
    """
    source = "affine argument"
    if affine is None:
        meta = getattr(image, "meta", None)
        if isinstance(meta, dict) and meta.get("affine") is not None:
            affine, source = meta["affine"], "image meta 'affine'"
        elif isinstance(meta, dict) and meta.get("original_affine") is not None:
            affine, source = meta["original_affine"], "image meta 'original_affine'"
        else:
            return np.eye(4), "identity"
    a = to_numpy(affine, "affine") if isinstance(affine, torch.Tensor) else np.asarray(affine, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:  # a batched affine of one case
        a = a[0]
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] not in (spatial_dims + 1, 4):
        raise ValueError(f"affine must be a {spatial_dims + 1}x{spatial_dims + 1} or 4x4 matrix, got shape {a.shape}.")
    if not np.isfinite(a).all() or abs(np.linalg.det(a[:-1, :-1])) < 1e-12:
        raise ValueError(f"affine must be finite and invertible, got\n{a}")
    if not np.allclose(a[-1], np.eye(a.shape[0])[-1]):
        raise ValueError(f"affine's last row must be (0, .., 0, 1), got {a[-1].tolist()}.")
    return np.asarray(to_affine_nd(3, a), dtype=np.float64), source


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write ``data`` (spatial axes first, then any extra axis) as NIfTI with ``affine`` in both sform and qform."""
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.header.set_sform(affine, code=1)
    img.header.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))


def save_json(path: Path, content: dict) -> None:
    """Write ``content`` as indented JSON."""
    with open(path, "w") as f:
        json.dump(content, f, indent=2, sort_keys=False)
        f.write("\n")


@contextmanager
def atomic_case_dir(output_dir: Path, case_id: str) -> Iterator[Path]:
    """Yield a temporary folder inside ``output_dir``; on success it replaces ``output_dir/case_id`` as a whole.

    On an exception the temporary folder is removed and an existing case folder is left untouched; a reader never
    sees a mixture of old and new files (an old folder is moved aside, the new one renamed into place, then the old
    one deleted). The folder gets the permissions of ``os.mkdir`` (``0o777 & ~umask``, see
    :func:`monai_car.utils.atomic.atomic_dir`), so a case folder is as readable as any other output.
    """
    final = Path(output_dir) / case_id
    if (final.exists() or final.is_symlink()) and not final.is_dir():
        raise FileExistsError(f"{final} exists and is not a folder; move it away before writing case {case_id}.")
    with atomic_dir(final) as tmp:
        yield tmp
