"""Demo CT volumes for the inference path: lesions at known world coordinates."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from monai_car.data import ensure_demo_volumes, load_demo_nodules
from monai_car.data.demo import demo_split


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    return ensure_demo_volumes(tmp_path_factory.mktemp("cache"), num_volumes=2)


def test_lesion_coordinates_match_the_masks(volumes):
    with open(volumes / "lesions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["study"] for r in rows} == {"demo_ct_00", "demo_ct_01"}
    nodules = {n.nodule_id: n for n in load_demo_nodules()}
    test_patients = demo_split([n.patient_id for n in nodules.values()])["test"]
    for study in ("demo_ct_00", "demo_ct_01"):
        ct = nib.load(volumes / f"{study}.nii.gz")
        mask = nib.load(volumes / f"{study}_lesions.nii.gz")
        graders = np.asarray(nib.load(volumes / f"{study}_graders.nii.gz").dataobj)
        assert ct.get_data_dtype() == np.int16 and np.allclose(ct.affine, mask.affine)
        assert np.abs(ct.affine[:3, 3]).min() > 1.0  # a real, non-zero origin
        labels = np.asarray(mask.dataobj)
        np.testing.assert_array_equal(labels > 0, graders.any(axis=3))
        mine = [r for r in rows if r["study"] == study]
        assert sorted(np.unique(labels))[1:] == [int(r["label"]) for r in mine]
        for r in mine:
            n = nodules[r["nodule_id"]]
            assert r["patient_id"] in test_patients and int(r["num_graders"]) == n.num_graders
            np.testing.assert_allclose(nib.affines.voxel_sizes(ct.affine), [n.pixel_spacing] * 2 + [n.slice_spacing])
            idx = np.argwhere(labels == int(r["label"]))
            centre_voxel = (idx.min(axis=0) + idx.max(axis=0)) / 2.0
            ras = ct.affine[:3, :3] @ centre_voxel + ct.affine[:3, 3]
            lps = [-ras[0], -ras[1], ras[2]]
            np.testing.assert_allclose([float(r["x"]), float(r["y"]), float(r["z"])], lps, atol=1e-3)
            assert (graders[labels == int(r["label"])].sum(axis=0) > 0).sum() == n.num_graders
            hu = np.asarray(ct.dataobj)
            assert hu[labels == int(r["label"])].mean() > np.median(hu) + 150
    manifest = json.loads((volumes / "manifest.json").read_text())
    assert [v["study"] for v in manifest["volumes"]] == ["demo_ct_00", "demo_ct_01"]


def test_volumes_cached_and_validated(volumes, tmp_path):
    stamp = (volumes / "lesions.csv").stat().st_mtime_ns
    assert ensure_demo_volumes(volumes.parent, num_volumes=2) == volumes
    assert (volumes / "lesions.csv").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="num_volumes"):
        ensure_demo_volumes(tmp_path, num_volumes=0)
    with pytest.raises(ValueError, match="at most"):
        ensure_demo_volumes(tmp_path, num_volumes=50)
    assert list(tmp_path.iterdir()) == []
