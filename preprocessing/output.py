"""Writing a data set folder: staged atomically, NIfTI crops, patient splits and the datalist/summary JSON files.

Layout (what ``monai_car.data.load_car_datalist`` and the engines read)::

    OUT/datalist.json      {"name", "description", "split_seed", "training": [...], "validation": [...], "test": [...]}
    OUT/datalist_3d.json   same keys, 3D patches (only with --3d)
    OUT/summary.json       counts, skipped cases and why
    OUT/images/<patient>/<nodule_id>_k<slice>.nii.gz           float32 in [0, 1]
    OUT/labels/<patient>/<nodule_id>_k<slice>_g<grader>.nii.gz uint8 {0, 1}, one per grader

Everything is written into a hidden folder beside ``OUT`` and moved into place only when complete, so a failed
or interrupted run leaves no half-written output.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np

__all__ = ["SPLITS", "check_output_free", "split_patients", "staged_output", "write_json", "write_nifti"]

SPLITS = ("training", "validation", "test")


def _atomic() -> ModuleType:
    """:mod:`monai_car.utils.atomic`, imported on first use: importing ``monai_car.utils`` loads torch and MONAI
    (seconds), which nothing else in ``preprocessing`` needs, so ``import preprocessing`` stays light."""
    from monai_car.utils import atomic

    return atomic


def check_output_free(out: str | Path, overwrite: bool = False) -> Path:
    """Fail early (before any long work) when ``out`` exists and may not be replaced; returns ``out`` absolute."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"output folder {out} already exists; pass --overwrite to replace it or pick another.")
    return out


@contextmanager
def staged_output(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success move it to ``out``, on any error delete it.

    The folder gets the permissions of ``os.mkdir`` (``0o777 & ~umask``; :func:`monai_car.utils.atomic.atomic_dir`),
    not ``tempfile.mkdtemp``'s owner-only 0700.

    Args:
        out: the final data set folder.
        overwrite: replace an existing ``out`` (it is removed only after the new one is complete).

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is false, or ``out`` is a file.
    """
    out = check_output_free(out, overwrite)
    with _atomic().atomic_dir(out) as stage:
        yield stage


def write_nifti(data: np.ndarray, affine: np.ndarray, path: str | Path) -> None:
    """Save ``data`` with ``affine`` (voxel to RAS, mm) as NIfTI-1, both qform and sform set (scanner frame).

    ``.nii.gz`` is gzipped in one call with a fixed timestamp (reproducible bytes, much faster than nibabel's
    streamed writes). Writes to a temporary name in the same folder and renames it, so the file appears complete
    or not at all.
    """
    path = Path(path)
    if not str(path).endswith((".nii", ".nii.gz")):
        raise ValueError(f"{path}: NIfTI file names end in .nii or .nii.gz.")
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError(f"{path}: affine must be a finite 4x4 matrix, got {affine}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    raw = img.to_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=1, mtime=0)
    _atomic().write_bytes_atomic(path, raw)


def write_json(obj: object, path: str | Path) -> None:
    """Write ``obj`` as indented JSON atomically (temporary file in the same folder, then rename)."""
    _atomic().write_json_atomic(path, obj, indent=1, allow_nan=False)


def split_patients(
    patients: Sequence[str], seed: int = 0, fractions: Sequence[float] = (0.7, 0.15, 0.15)
) -> dict[str, list[str]]:
    """Assign whole patients to ``training`` / ``validation`` / ``test``, reproducibly from ``seed``.

    The sorted unique patients are permuted with ``numpy.random.default_rng(seed)``; validation and test get
    ``round(fraction * n)`` patients each (at least one each when there are three or more patients and the
    fraction is positive), training the rest.

    Returns:
        ``{split: sorted patient ids}``.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {list(fractions)}.")
    unique = sorted(set(patients))
    n = len(unique)
    order = [unique[i] for i in np.random.default_rng(seed).permutation(n)]
    counts = []
    for f in fractions[1:]:
        c = int(round(f * n))
        if f > 0 and n >= 3:
            c = max(c, 1)
        counts.append(c)
    n_val, n_test = counts
    if n_val + n_test > n:
        n_test = max(n - n_val, 0)
    val = order[:n_val]
    test = order[n_val : n_val + n_test]
    train = order[n_val + n_test :]
    return {"training": sorted(train), "validation": sorted(val), "test": sorted(test)}
