"""A tiny on-disk CAR data set, tiny-network overrides and helpers for running the LIDC and Cityscapes bundles in
tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

__all__ = [
    "BUNDLE",
    "CITYSCAPES_NETWORK",
    "CITYSCAPES_TINY",
    "CONFIGS",
    "TINY",
    "assert_same",
    "cli_overrides",
    "make_tiny_dataset",
    "run_bundle_training",
    "save_nifti",
]

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "lidc_car"
CONFIGS = BUNDLE / "configs"

# one short epoch per stage, 2 samples of G, validation every epoch: shared by both bundles' tiny runs
_TINY_TRAINING = {
    "batch_size": 2,
    "d_channels": [4, 8],
    "cache_rate": 0.0,
    "stage1#max_epochs": 1,
    "stage2#max_epochs": 1,
    "stage2#num_samples": 2,
    "stage2#val_num_samples": 3,
    "stage2#val_interval": 1,
}

# narrow networks and 32x32 crops: a few seconds per stage on 2 CPU cores
TINY = {
    **_TINY_TRAINING,
    "crop_size": 32,
    "f_channels": [4, 8],
    "f_convs_per_block": [1, 1],
    "g_channels": [4, 8, 16],
    "noise_dim": 4,
}

# the Cityscapes bundle's networks and settings, as narrow (32x32 crops of 32x64 generated scenes)
CITYSCAPES_NETWORK = {"f_hidden_channels": 4, "f_num_blocks": 1, "g_channels": [4, 8], "noise_dim": 4}
CITYSCAPES_TINY = {**_TINY_TRAINING, **CITYSCAPES_NETWORK, "crop_size": [32, 32]}


def run_bundle_training(config_file: str, overrides: dict, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run training`` in a subprocess (one OpenMP thread unless ``OMP_NUM_THREADS`` says
    otherwise); fails the test on a non-zero exit with the end of its output."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", config_file]
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    proc = subprocess.run(
        [*cmd, *cli_overrides(overrides)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def assert_same(a, b, where: str) -> None:
    """``a`` and ``b`` (checkpoints: nested dicts, lists, tensors, numbers) are equal bit for bit; ``where`` names
    the first difference."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}/{i}")
    else:
        assert type(a) is type(b) and (a == b if not hasattr(a, "shape") else (a == b).all()), where


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
