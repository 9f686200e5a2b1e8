from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from preprocessing.output import split_patients, staged_output, write_json, write_nifti


def test_split_by_patient_is_seeded_and_complete():
    patients = [f"P{i:02d}" for i in range(20)] * 3
    a = split_patients(patients, seed=0)
    assert a == split_patients(list(reversed(patients)), seed=0)
    assert a != split_patients(patients, seed=1)
    assert [len(a[s]) for s in ("training", "validation", "test")] == [14, 3, 3]
    assert sorted(sum(a.values(), [])) == sorted(set(patients))
    small = split_patients(["a", "b", "c"], seed=0)
    assert all(len(v) == 1 for v in small.values())
    with pytest.raises(ValueError, match="sum"):
        split_patients(patients, fractions=(0.5, 0.5, 0.5))


def test_staged_output_moves_only_when_complete(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        with staged_output(out) as stage:
            write_json({"a": 1}, stage / "x.json")
            raise RuntimeError("failure half-way")
    assert list(tmp_path.iterdir()) == []
    with staged_output(out) as stage:
        write_json({"a": 1}, stage / "x.json")
    assert json.loads((out / "x.json").read_text()) == {"a": 1}
    with pytest.raises(FileExistsError, match="--overwrite"):
        with staged_output(out):
            pass
    with staged_output(out, overwrite=True) as stage:
        write_json({"b": 2}, stage / "y.json")
    assert sorted(p.name for p in out.iterdir()) == ["y.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_write_nifti_keeps_affine_and_dtype(tmp_path):
    affine = np.array([[0.7, 0, 0, -10], [0, 0.7, 0, 20], [0, 0, 2.5, -30.5], [0, 0, 0, 1]])
    write_nifti(np.ones((3, 4), np.uint8), affine, tmp_path / "m.nii.gz")
    img = nib.load(tmp_path / "m.nii.gz")
    np.testing.assert_allclose(img.affine, affine)
    assert img.get_data_dtype() == np.uint8 and img.header.get_sform(coded=True)[1] == 1
    with pytest.raises(ValueError, match="end in .nii"):
        write_nifti(np.ones((2, 2)), affine, tmp_path / "m.png")
