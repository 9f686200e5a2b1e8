from __future__ import annotations

import os

import pytest

from monai_car.inferers import find_ct_inputs, study_id_of


def _layout(root):
    for study in ("LIDC-IDRI-0001", "LIDC-IDRI-0002"):
        (root / study).mkdir()
        (root / study / "1.dcm").write_bytes(b"")
    (root / "lesions.csv").write_text("lesion_id,x,y,z,study\n")
    (root / "ct.nii.gz").write_bytes(b"")
    (root / "ct_lesions.nii.gz").write_bytes(b"")


def test_folder_pattern_matches_folders_only(tmp_path):
    _layout(tmp_path)
    folders = find_ct_inputs(tmp_path, "*/")
    assert folders == [str(tmp_path / "LIDC-IDRI-0001"), str(tmp_path / "LIDC-IDRI-0002")]  # not lesions.csv
    assert [study_id_of(p) for p in folders] == ["LIDC-IDRI-0001", "LIDC-IDRI-0002"]
    assert find_ct_inputs(tmp_path, "LIDC*" + os.sep) == folders
    assert find_ct_inputs(tmp_path, "*.nii.gz", exclude_suffixes=["_lesions"]) == [str(tmp_path / "ct.nii.gz")]
    assert str(tmp_path / "lesions.csv") in find_ct_inputs(tmp_path, "*")  # without the slash, files match too


def test_no_match_and_bad_pattern(tmp_path):
    (tmp_path / "lesions.csv").write_text("")
    with pytest.raises(FileNotFoundError, match=r"no folder in .* matches '\*/'.*'\*/' for one DICOM series folder"):
        find_ct_inputs(tmp_path, "*/")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        find_ct_inputs(tmp_path / "missing")
    with pytest.raises(ValueError, match="pattern must be a non-empty glob"):
        find_ct_inputs(tmp_path, "/")
