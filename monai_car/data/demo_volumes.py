"""Small synthetic CT volumes with the demo lesions at known world coordinates, for the inference path.

:func:`ensure_demo_volumes` writes, into ``<cache root>/demo_lidc_volumes_v1``, for each of a few patients of the
demo data set's *test* split (lesions the demo model never trains on):

- ``<study>.nii.gz``: int16 HU, 192 x 192 x N voxels at the patient's real LIDC pixel and slice spacing, laid out
  like a DICOM series converted by ITK (voxel axes: column, row, slice; affine diag(-ps, -ps, dz) in RAS with a
  non-zero origin), synthetic lung appearance (:mod:`monai_car.data.demo_render`) around the real grader masks;
- ``<study>_lesions.nii.gz``: uint8 lesion mask on the same grid (label j = the j-th lesion, voxels any reader marked);
- ``<study>_graders.nii.gz``: uint8 ``(X, Y, Z, 4)``, each reader's mask (empty for readers who did not mark);

plus ``lesions.csv`` (``lesion_id, x, y, z, study, ...``; x, y, z in mm, DICOM LPS, the default frame of
``monai_car.inferers.lesions_from_csv``; the centre of the lesion's bounding box) and ``manifest.json``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from monai_car.utils.atomic import file_digest

from ._demo_cache import is_complete_build, publish_build, save_nifti_reproducible
from .demo import (
    NUM_GRADERS,
    DemoNodule,
    demo_cache_root,
    demo_split,
    load_demo_nodules,
)
from .demo_render import render_ct

__all__ = ["DEMO_VOLUMES_NAME", "ensure_demo_volumes", "volume_affine"]

DEMO_VOLUMES_NAME = "demo_lidc_volumes_v1"
_SIZE = 192
_PLACES = [(56, 56), (136, 136), (56, 136), (136, 56)]
_Z_SHIFTS = [0, 3, -3, 5]
_MARGIN = 8


def volume_affine(pixel_spacing: float, slice_spacing: float, origin_lps: tuple[float, float, float]) -> np.ndarray:
    """RAS affine of an ``[column, row, slice]`` volume whose voxel (0, 0, 0) sits at ``origin_lps`` (LPS mm),
    columns along +x (L), rows along +y (P), slices along +z (S) in DICOM terms."""
    if pixel_spacing <= 0 or slice_spacing <= 0 or len(origin_lps) != 3:
        raise ValueError(f"need positive spacings and a 3D origin, got {pixel_spacing}, {slice_spacing}, {origin_lps}.")
    affine = np.diag([-pixel_spacing, -pixel_spacing, slice_spacing, 1.0])
    affine[:3, 3] = [-origin_lps[0], -origin_lps[1], origin_lps[2]]
    return affine


def _build_volume(nodules: list[DemoNodule], rng: np.random.Generator, study: str, origin: tuple) -> dict:
    ps, dz = nodules[0].pixel_spacing, nodules[0].slice_spacing
    depth = max(n.masks.shape[3] for n in nodules) + 2 * _MARGIN
    shape = (_SIZE, _SIZE, depth)
    graders = np.zeros((NUM_GRADERS, *shape), dtype=bool)
    lesion_map = np.zeros(shape, dtype=np.uint8)
    lesion_hu = np.zeros(shape, dtype=np.float32)
    avoid, lesions = [], []
    for j, nodule in enumerate(nodules):
        local = nodule.bbox_center
        target = np.array([*_PLACES[j], depth // 2 + _Z_SHIFTS[j]])
        start = target - np.floor(local).astype(int)
        stop = start + np.array(nodule.masks.shape[1:])
        if (start < 0).any() or (stop > np.array(shape)).any():
            raise ValueError(f"demo nodule {nodule.nodule_id} does not fit its place in the {shape} volume.")
        box = tuple(slice(a, b) for a, b in zip(start, stop))
        graders[(slice(0, nodule.num_graders), *box)] = nodule.masks
        lesion_map[box][nodule.masks.any(axis=0)] = j + 1
        pad = tuple(slice(max(a - 3, 0), b + 3) for a, b in zip(start, stop))
        lesion_hu[pad] = float(rng.uniform(-80.0, 60.0))
        centre = start + local  # voxel [row, column, slice]
        avoid.append((centre, 0.5 * max(nodule.masks.shape[1:3]) * ps))
        lesions.append((nodule, centre))
    agreement = graders.sum(axis=0, dtype=np.float32) / NUM_GRADERS
    hu = render_ct(agreement, lesion_hu, (ps, ps, dz), rng, avoid=avoid)
    affine = volume_affine(ps, dz, origin)
    return {"hu": hu, "graders": graders, "lesions": lesion_map, "affine": affine, "found": lesions, "study": study}


def _build_volumes(stage: Path, num_volumes: int, seed: int, split_seed: int) -> None:
    nodules = load_demo_nodules()
    test_patients = demo_split([n.patient_id for n in nodules], split_seed)["test"]
    if num_volumes > len(test_patients):
        raise ValueError(f"num_volumes must be at most {len(test_patients)} (test patients), got {num_volumes}.")
    rows, manifest = [], []
    for v, patient in enumerate(test_patients[:num_volumes]):
        mine = [n for n in nodules if n.patient_id == patient][: len(_PLACES)]
        rng = np.random.default_rng([seed, 1000 + v])
        origin = (float(rng.uniform(20.0, 60.0)), float(rng.uniform(-140.0, -100.0)), float(rng.uniform(-220, -120)))
        study = f"demo_ct_{v:02d}"
        vol = _build_volume(mine, rng, study, origin)
        affine = vol["affine"]
        hu = np.clip(np.rint(vol["hu"]), -1024, 3071).astype(np.int16)
        save_nifti_reproducible(np.ascontiguousarray(hu.transpose(1, 0, 2)), affine, stage / f"{study}.nii.gz")
        save_nifti_reproducible(
            np.ascontiguousarray(vol["lesions"].transpose(1, 0, 2)), affine, stage / f"{study}_lesions.nii.gz"
        )
        graders = np.ascontiguousarray(vol["graders"].transpose(2, 1, 3, 0).astype(np.uint8))
        save_nifti_reproducible(graders, affine, stage / f"{study}_graders.nii.gz")
        lesion_entries = []
        for j, (nodule, centre) in enumerate(vol["found"]):
            voxel = np.array([centre[1], centre[0], centre[2], 1.0])  # file axes: column, row, slice
            ras = affine @ voxel
            lps = [-ras[0], -ras[1], ras[2]]
            row = {"lesion_id": f"lesion{j + 1:02d}", "x": round(lps[0], 4), "y": round(lps[1], 4)}
            row.update({"z": round(lps[2], 4), "study": study, "label": j + 1, "patient_id": patient})
            row.update({"nodule_id": nodule.nodule_id, "num_graders": nodule.num_graders})
            rows.append(row)
            lesion_entries.append({**row, "center_voxel": [float(c) for c in voxel[:3]]})
        manifest.append(
            {
                "study": study,
                "image": f"{study}.nii.gz",
                "lesion_mask": f"{study}_lesions.nii.gz",
                "grader_masks": f"{study}_graders.nii.gz",
                "shape": list(hu.transpose(1, 0, 2).shape),
                "spacing_mm": [mine[0].pixel_spacing, mine[0].pixel_spacing, mine[0].slice_spacing],
                "affine": affine.tolist(),
                "lesions": lesion_entries,
            }
        )
    with open(stage / "lesions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    doc = {
        "description": "Synthetic CT volumes (HU) with REAL LIDC-IDRI grader masks placed at known world "
        "coordinates (lesions.csv: LPS mm, bounding-box centres) for the inference path; images are synthetic, "
        "the lesions come from the demo data set's test patients.",
        "volumes": manifest,
    }
    (stage / "manifest.json").write_text(json.dumps(doc, indent=1) + "\n")
    (stage / "README.md").write_text("# monai-car demo CT volumes\n\n" + doc["description"] + "\n")


def ensure_demo_volumes(
    cache_dir: str | Path | None = None, num_volumes: int = 3, seed: int = 0, split_seed: int = 0, force: bool = False
) -> Path:
    """Return the folder of demo CT volumes (see the module docstring), generating it on first use.

    Args:
        cache_dir: the cache root (volumes in ``cache_dir/demo_lidc_volumes_v1``); ``$MONAI_CAR_CACHE`` or
            ``~/.cache/monai_car`` when ``None``.
        num_volumes: how many volumes (one per test patient of the demo split, at most the number of test patients).
        seed: seed of the synthetic images.
        split_seed: seed of the demo data set's patient split (so the lesions stay unseen in training).
        force: regenerate even when a complete folder with these parameters exists.
    """
    if int(num_volumes) < 1:
        raise ValueError(f"num_volumes must be >= 1, got {num_volumes}.")
    from .demo import DEMO_ASSET

    folder = demo_cache_root(cache_dir) / DEMO_VOLUMES_NAME
    params = {"version": 1, "num_volumes": int(num_volumes), "seed": int(seed), "split_seed": int(split_seed)}
    params["asset"] = file_digest(DEMO_ASSET) if DEMO_ASSET.is_file() else None
    if not force and is_complete_build(folder, params):
        return folder
    return publish_build(
        folder, params, lambda stage: _build_volumes(stage, int(num_volumes), int(seed), int(split_seed))
    )
