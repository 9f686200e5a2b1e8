from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from monai_car.inferers import lesions_from_csv, lesions_from_mask


def test_csv_lps_to_ras(tmp_path):
    p = tmp_path / "lesions.csv"
    p.write_text("lesion_id,x,y,z,study,note\nA,10.5,-20,30,ct1,solid\nB,0,0,-5,ct1,\n")
    a, b = lesions_from_csv(p)
    np.testing.assert_allclose(a.center_ras, [-10.5, 20.0, 30.0])
    assert a.study == "ct1" and a.extra == {"note": "solid"}
    ras = lesions_from_csv(p, frame="RAS")[0]
    np.testing.assert_allclose(ras.center_ras, [10.5, -20.0, 30.0])


@pytest.mark.parametrize(
    "text,match",
    [
        ("id,x,y,z\n1,2,3,4\n", "missing column"),
        ("lesion_id,x,y,z\nA,1,two,3\n", "line 2"),
        ("lesion_id,x,y,z\nA,1,2,3\nA,1,2,3\n", "repeats"),
        ("lesion_id,x,y,z\n", "no lesion"),
    ],
)
def test_csv_errors(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        lesions_from_csv(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lesions_from_csv(tmp_path / "missing.csv")


def test_mask_components(tmp_path):
    mask = np.zeros((20, 20, 10), dtype=np.uint8)
    mask[2:5, 2:5, 1:4] = 1  # centre (3, 3, 2), extent 3 voxels
    mask[10:16, 12:14, 5:6] = 1  # centre (12.5, 12.5, 5)
    aff = np.diag([0.5, 0.5, 2.0, 1.0])
    aff[:3, 3] = [10, 20, 30]
    nib.save(nib.Nifti1Image(mask, aff), tmp_path / "m.nii.gz")
    a, b = lesions_from_mask(tmp_path / "m.nii.gz", reference_affine=aff)
    np.testing.assert_allclose(a.center_ras, [10 + 1.5, 20 + 1.5, 30 + 4.0])
    np.testing.assert_allclose(a.extent_mm, [1.5, 1.5, 6.0])
    np.testing.assert_allclose(b.center_ras, [10 + 6.25, 20 + 6.25, 40.0])
    with pytest.raises(ValueError, match="voxel grid"):
        lesions_from_mask(tmp_path / "m.nii.gz", reference_affine=np.eye(4))
