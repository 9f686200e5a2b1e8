"""Import LIDC crops from the formats people already hold into the monai-car data set layout.

``python -m preprocessing.lidc import --format FORMAT SRC OUT`` writes the same ``datalist.json`` / NIfTI layout as
the DICOM build (see :mod:`preprocessing.output`), from:

- ``prob-unet-png``: the Probabilistic U-Net PNG release, ``[split/]images/<patient>/z-<z>_c<k>.png`` and
  ``[split/]gt/<patient>/z-<z>_c<k>_l<r>.png`` (180 x 180);
- ``pickle``: the ``data_lidc.pickle`` of the Probabilistic U-Net PyTorch port, a dict keyed by slice name of
  ``{"image": (128, 128) float in [0, 1], "masks": [4 x (128, 128)], "series_uid": str}``;
- ``phiseg-hdf5``: PHiSeg's hdf5, groups ``train``/``val``/``test`` with ``images`` ``(N, 128, 128)`` (stored as
  image - 0.5), ``labels`` ``(N, 128, 128, 4)`` and ``uids`` (hashes of the series UID);
- ``image-label-folders``: ``<split>/<case>/image_<k>.jpg`` with ``label0_.jpg`` .. ``label3_.jpg`` (128 x 128,
  JPEG, masks thresholded at 128), the layout of the real sample in ``../shared/data/lidc_crops_sample``.

These formats carry no geometry: the arrays are taken to be laid out like DICOM pixel data (``[row, column]``, as
every one of them was cut from ``pixel_array``) and are written RAS-canonical like the DICOM build, with an affine of
``--pixel-spacing`` mm (1.0 by default: the true spacing is unknown) and origin 0. Fields a format does not hold
(``patient_id``, ``series_uid``, ``slice_z``) are ``null``; ``num_graders`` counts the graders whose mask is
non-empty on that slice (the formats have no nodule-level count). Splits: the source's own when it has them, else
by patient (or series, or case when neither is known) from ``--split-seed``; a seeded split that would leave a split
with a positive fraction empty (e.g. a single-patient source: at least one patient per such split is needed) stops
the import with an error saying how many patients there are.

Grader labels must be binary (0/1, or 0/255 PNGs; the JPEG masks of ``image-label-folders`` are thresholded at 128):
any other value (labels 0/2, several classes, soft masks) stops the import with an error naming the file and the
values found, unless ``--label-threshold T`` maps them explicitly (mask = label >= T).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from monai_car.data.dicom_series import DataError

from .crops import crop_affine, to_ras_canonical
from .importers_arrays import read_phiseg_hdf5, read_pickle
from .importers_base import ImportCase, normalise_split
from .importers_images import read_image_label_folders, read_prob_unet_png
from .output import SPLITS, check_output_free, split_patients, staged_output, write_json, write_nifti

__all__ = ["FORMATS", "ImportCase", "import_dataset", "normalise_split"]

FORMATS = ("prob-unet-png", "pickle", "phiseg-hdf5", "image-label-folders")


def _write_chunk(args: tuple) -> list[dict]:
    cases, stage, spacing = args
    rows = []
    for case in cases:
        affine = crop_affine((0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0), (spacing, spacing), (0, 0), (1, 1), spacing)
        image, out_affine = to_ras_canonical(np.clip(case.image, 0, 1).astype(np.float32), affine)
        item = {
            "image": f"images/{case.key}.nii.gz",
            "labels": [],
            "patient_id": case.patient_id,
            "series_uid": case.series_uid,
            "nodule_id": case.nodule_id if case.nodule_id is not None else case.key,
            "slice_z": case.slice_z,
            "num_graders": int(sum(bool(m.any()) for m in case.masks)),
            "source": case.source,
            **case.extra,
        }
        write_nifti(image, out_affine, Path(stage) / item["image"])
        for r, mask in enumerate(case.masks):
            item["labels"].append(f"labels/{case.key}_g{r}.nii.gz")
            write_nifti(
                to_ras_canonical(mask.astype(np.uint8), affine)[0], out_affine, Path(stage) / item["labels"][-1]
            )
        rows.append(
            {"item": item, "split": case.split, "group": case.group or case.patient_id or case.series_uid or case.key}
        )
    return rows


def _checked_chunks(cases: Iterable[ImportCase | dict], problems: list[dict], size: int = 64) -> Iterator[list]:
    """Chunks of cases that pass :meth:`ImportCase.check`; readers' problems (dicts) and failed checks go to
    ``problems``."""
    good: list[ImportCase] = []
    graders = None
    for case in cases:
        if isinstance(case, dict):
            problems.append(case)
            continue
        try:
            case.check()
            if graders is not None and len(case.masks) != graders:
                raise DataError(
                    f"{case.source}: has {len(case.masks)} grader masks, the first case had {graders}; every case "
                    "needs the same number; skipped."
                )
        except DataError as err:
            problems.append({"kind": "case", "path": case.source, "reason": str(err)})
            continue
        graders = len(case.masks)
        good.append(case)
        if len(good) >= size:
            yield good
            good = []
    if good:
        yield good


def _bounded_map(pool: ProcessPoolExecutor, fn, tasks: Iterable, max_pending: int) -> Iterator:
    """``pool.map`` that keeps at most ``max_pending`` tasks in flight (results in order), so a large source is
    never read into memory at once."""
    pending: deque = deque()
    for task in tasks:
        pending.append(pool.submit(fn, task))
        if len(pending) >= max_pending:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _readers() -> dict:
    return {
        "prob-unet-png": read_prob_unet_png,
        "pickle": read_pickle,
        "phiseg-hdf5": read_phiseg_hdf5,
        "image-label-folders": read_image_label_folders,
    }


def import_dataset(
    fmt: str,
    src: str | Path,
    out: str | Path,
    pixel_spacing: float = 1.0,
    split_seed: int = 0,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    val_fraction: float = 0.0,
    workers: int = 2,
    overwrite: bool = False,
    progress: bool = True,
    label_threshold: float | None = None,
) -> dict:
    """Import ``src`` in format ``fmt`` into a new data set folder ``out``.

    Args:
        fmt: one of :data:`FORMATS`.
        src: the source file or folder.
        out: the data set folder to create.
        pixel_spacing: in-plane spacing (mm) written into the affines (the formats do not record it).
        split_seed: seed of the split when the source has none (and of ``val_fraction``).
        split_fractions: training/validation/test fractions when the source has no split.
        val_fraction: when the source has training but no validation split, move this fraction of the training
            groups (patients, else series, else cases) to validation.
        workers: processes writing NIfTI files.
        overwrite: replace an existing ``out``.
        progress: show a progress bar.
        label_threshold: how grader labels become masks. ``None`` (default): labels must be binary (0/1; 0/255 for
            ``prob-unet-png``; ``image-label-folders`` JPEGs are thresholded at 128), and any other value (e.g.
            labels 0/2) stops the import with a :class:`DataError` naming the file and the values; a number: a
            mask is ``label >= label_threshold`` for every format (the explicit mapping, e.g. 1 for "non-zero").

    Returns:
        the summary written to ``out/summary.json``.

    Raises:
        ValueError: unknown format or bad option.
        FileNotFoundError: ``src`` does not exist.
        DataError: ``src`` holds no usable case, or non-binary labels without ``label_threshold`` (nothing is
            written).
    """
    readers = _readers()
    if fmt not in readers:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    src = Path(src).expanduser().absolute()
    if not src.exists():
        raise FileNotFoundError(f"source {src} does not exist.")
    if not pixel_spacing > 0:
        raise ValueError(f"pixel_spacing must be positive, got {pixel_spacing}.")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    if label_threshold is not None and (isinstance(label_threshold, bool) or not np.isfinite(label_threshold)):
        raise ValueError(f"label_threshold must be a finite number or None, got {label_threshold!r}.")
    split_patients([], 0, split_fractions)
    check_output_free(out, overwrite)
    rows: list[dict] = []
    problems: list[dict] = []
    with staged_output(out, overwrite=overwrite) as stage:
        bar = tqdm(desc=f"import {fmt}", unit="case", disable=not progress)
        chunks = _checked_chunks(readers[fmt](src, label_threshold=label_threshold), problems)
        tasks = ((chunk, str(stage), float(pixel_spacing)) for chunk in chunks)
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for chunk_rows in _bounded_map(pool, _write_chunk, tasks, 2 * workers):
                    rows.extend(chunk_rows)
                    bar.update(len(chunk_rows))
        else:
            for task in tasks:
                chunk_rows = _write_chunk(task)
                rows.extend(chunk_rows)
                bar.update(len(chunk_rows))
        bar.close()
        if not rows:
            raise DataError(
                f"no usable case in {src} as format {fmt!r}: " + "; ".join(p["reason"] for p in problems[:3])
            )
        splits = _assign_splits(rows, split_seed, split_fractions, val_fraction, where=f"{src} ({fmt})")
        doc = {
            "name": f"LIDC-IDRI crops imported from {fmt}",
            "description": (
                f"Imported from {src} ({fmt}). Images scaled to [0, 1] as in the source, RAS-canonical NIfTI with an "
                f"assumed {pixel_spacing} mm spacing (the source has no geometry); one mask per grader (empty where "
                "the grader did not mark the lesion). LIDC-IDRI: Armato III et al. 2011, TCIA, CC BY 3.0."
            ),
            "split_seed": split_seed,
            "num_graders": max(len(r["item"]["labels"]) for r in rows),
        }
        for s in SPLITS:
            doc[s] = sorted((r["item"] for r in rows if r["assigned"] == s), key=lambda i: i["image"])
        write_json(doc, stage / "datalist.json")
        summary = {
            "created_by": f"python -m preprocessing.lidc import --format {fmt}",
            "source": str(src),
            "format": fmt,
            "pixel_spacing_assumed": pixel_spacing,
            "label_threshold": label_threshold,
            "counts": {
                "cases": len(rows),
                "per_split": {s: len(doc[s]) for s in SPLITS},
                "groups_per_split": {s: len(g) for s, g in splits.items()},
                "cases_by_num_graders": _by_graders(rows),
                "skipped": len(problems),
            },
            "split_source": "source" if any(r["split"] for r in rows) else "seeded split by group",
            "skipped": problems,
        }
        write_json(summary, stage / "summary.json")
    return summary


def _by_graders(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        g = str(r["item"]["num_graders"])
        counts[g] = counts.get(g, 0) + 1
    return dict(sorted(counts.items()))


def _group_kind(rows: list[dict]) -> str:
    """What the split groups are, for messages."""
    if all(r["item"]["patient_id"] for r in rows):
        return "patient"
    if all(r["item"]["series_uid"] for r in rows):
        return "series"
    return "group (patient, else series, else case)"


def _assign_splits(
    rows: list[dict], seed: int, fractions: Sequence[float], val_fraction: float, where: str = "the source"
) -> dict[str, list]:
    """Set ``row["assigned"]``: the source's split when every case has one, else a seeded split by group.

    Raises:
        DataError: a seeded split that would leave a split with a positive fraction empty (fewer groups than such
            splits, e.g. a single-patient source), or ``val_fraction`` with fewer than 2 training groups (it would
            move all of them); the message gives the number of groups and what the split needs.
    """
    if all(r["split"] for r in rows):
        for r in rows:
            r["assigned"] = r["split"]
        has_val = any(r["split"] == "validation" for r in rows)
        if val_fraction > 0 and not has_val:
            groups = sorted({r["group"] for r in rows if r["split"] == "training"})
            if len(groups) < 2:
                raise DataError(
                    f"{where}: --val-fraction {val_fraction:g} moves training {_group_kind(rows)}s to validation, but "
                    f"the training split holds {len(groups)} ({', '.join(map(str, groups))}), and at least 2 are "
                    "needed (one stays in training); nothing is written. Import more, give the source a validation "
                    "split folder, or drop --val-fraction."
                )
            order = [groups[i] for i in np.random.default_rng(seed).permutation(len(groups))]
            moved = set(order[: max(1, int(round(val_fraction * len(groups))))])
            for r in rows:
                if r["split"] == "training" and r["group"] in moved:
                    r["assigned"] = "validation"
    else:
        if any(r["split"] for r in rows):
            raise DataError("the source mixes cases inside split folders with cases outside them; use one layout.")
        split = split_patients([r["group"] for r in rows], seed, fractions)
        empty = [s for s, f in zip(SPLITS, fractions) if f > 0 and not split[s]]
        if empty:
            groups = sorted({r["group"] for r in rows})
            wanted = [s for s, f in zip(SPLITS, fractions) if f > 0]
            shown = ", ".join(map(str, groups[:5])) + (", ..." if len(groups) > 5 else "")
            raise DataError(
                f"{where}: the cases come from {len(groups)} {_group_kind(rows)}(s) ({shown}); a split by "
                f"{_group_kind(rows)} with --split-fractions {' '.join(f'{f:g}' for f in fractions)} needs at least "
                f"{len(wanted)} (one for each of {', '.join(wanted)}) and would leave {', '.join(empty)} empty; "
                "nothing is written. Import more patients, give the source train/val/test split folders, or put "
                "every case in one split (--split-fractions 1 0 0, or 0 0 1 for a test-only set)."
            )
        split_of = {g: s for s, gs in split.items() for g in gs}
        for r in rows:
            r["assigned"] = split_of[r["group"]]
    return {s: sorted({r["group"] for r in rows if r["assigned"] == s}) for s in SPLITS}
