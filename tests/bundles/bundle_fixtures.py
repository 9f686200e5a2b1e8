"""A tiny on-disk CAR data set and tiny-network overrides for running the LIDC and Cityscapes bundles in tests."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = [
    "BUNDLE",
    "CITYSCAPES_NETWORK",
    "CITYSCAPES_TINY",
    "CONFIGS",
    "TINY",
    "cli_overrides",
    "make_tiny_dataset",
    "save_nifti",
]

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "lidc_car"
CONFIGS = BUNDLE / "configs"

# narrow networks and 32x32 crops: a few seconds per stage on 2 CPU cores
TINY = {
    "crop_size": 32,
    "batch_size": 2,
    "f_channels": [4, 8],
    "f_convs_per_block": [1, 1],
    "g_channels": [4, 8, 16],
    "d_channels": [4, 8],
    "noise_dim": 4,
    "cache_rate": 0.0,
    "stage1#max_epochs": 1,
    "stage2#max_epochs": 1,
    "stage2#num_samples": 2,
    "stage2#val_num_samples": 3,
    "stage2#val_interval": 1,
}

# the Cityscapes bundle's networks and settings, as narrow (32x32 crops of 32x64 generated scenes)
CITYSCAPES_NETWORK = {"f_hidden_channels": 4, "f_num_blocks": 1, "g_channels": [4, 8], "noise_dim": 4}
CITYSCAPES_TINY = {
    **CITYSCAPES_NETWORK,
    "d_channels": [4, 8],
    "crop_size": [32, 32],
    "batch_size": 2,
    "cache_rate": 0.0,
    "stage1#max_epochs": 1,
    "stage2#max_epochs": 1,
    "stage2#num_samples": 2,
    "stage2#val_num_samples": 3,
    "stage2#val_interval": 1,
}


def cli_overrides(overrides: dict) -> list[str]:
    """``--key value`` pairs for ``python -m monai.bundle run`` (lists as JSON, as python-fire reads them)."""
    args = []
    for key, value in overrides.items():
        as_json = isinstance(value, (list, dict, bool)) or value is None
        args += [f"--{key}", json.dumps(value, separators=(",", ":")) if as_json else str(value)]
    return args


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _affine(origin_z: float) -> np.ndarray:
    a = np.diag([0.7, 0.7, 1.0, 1.0])
    a[:3, 3] = [-20.0, 15.0, origin_z]
    return a


def make_tiny_dataset(root: Path, counts: dict | None = None, size: int = 32, seed: int = 0) -> Path:
    """Write ``root/datalist.json`` with 2D NIfTI slices (``size`` x ``size``) and 4 graders' blob masks each."""
    counts = counts or {"training": 6, "validation": 2, "test": 2}
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    datalist: dict = {"name": "tiny", "description": "synthetic test data"}
    for split, n in counts.items():
        entries = []
        for i in range(n):
            cy, cx = rng.uniform(size * 0.35, size * 0.65, 2)
            r = rng.uniform(3, 6)
            labels = []
            masks = []
            for g in range(4):
                jy, jx, jr = rng.normal(0, 1.0, 3)
                mask = ((yy - cy - jy) ** 2 + (xx - cx - jx) ** 2 <= (r + jr) ** 2).astype(np.uint8)
                if g == 3 and i % 2:
                    mask[:] = 0  # a grader who did not mark it
                masks.append(mask)
                rel = f"labels/{split}_{i:02d}_g{g}.nii.gz"
                save_nifti(root / rel, mask, _affine(float(i)))
                labels.append(rel)
            image = 0.3 + 0.5 * np.mean(masks, axis=0) + 0.05 * rng.standard_normal((size, size))
            rel_image = f"images/{split}_{i:02d}.nii.gz"
            save_nifti(root / rel_image, image.astype(np.float32), _affine(float(i)))
            entries.append({"image": rel_image, "labels": labels, "patient_id": f"P{split}{i}", "num_graders": 4})
        datalist[split] = entries
    (root / "datalist.json").write_text(json.dumps(datalist, indent=1))
    return root
