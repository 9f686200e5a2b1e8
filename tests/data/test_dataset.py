from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_car.data import split_valid_cases
from monai_car.utils import CarKeys


def _case(root: Path, name: str, image: np.ndarray, masks: list[np.ndarray]) -> dict:
    nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), root / f"{name}.nii.gz")
    labels = []
    for r, m in enumerate(masks):
        nib.save(nib.Nifti1Image(m, np.eye(4)), root / f"{name}_g{r}.nii.gz")
        labels.append(str(root / f"{name}_g{r}.nii.gz"))
    return {CarKeys.IMAGE: str(root / f"{name}.nii.gz"), CarKeys.LABELS: labels, CarKeys.CASE_ID: name}


def test_split_valid_cases_skips_and_reports(tmp_path, caplog):
    rng = np.random.default_rng(0)
    img = rng.random((8, 8))
    good = [(rng.random((8, 8)) > 0.5).astype(np.uint8) for _ in range(4)]
    nan_img = img.copy()
    nan_img[2, 3] = np.nan
    data = [
        _case(tmp_path, "good", img, good),
        _case(tmp_path, "nan", nan_img, good),
        _case(tmp_path, "nonbinary", img, good[:3] + [good[3] * 255]),
        _case(tmp_path, "shape", img, [np.zeros((8, 9), np.uint8)] * 4),
        _case(tmp_path, "five", img, good + good[:1]),
    ]
    valid, skipped = split_valid_cases(data, num_graders=4)
    assert [v[CarKeys.CASE_ID] for v in valid] == ["good"]
    assert valid[0] is data[0]
    reasons = {s["case_id"]: s["reason"] for s in skipped}
    assert set(reasons) == {"nan", "nonbinary", "shape", "five"}
    assert "case nan" in reasons["nan"] and "1 NaN" in reasons["nan"]
    assert "not binary" in reasons["nonbinary"] and "nonbinary_g3" in reasons["nonbinary"]
    assert "(8, 9)" in reasons["shape"]
    assert "5 grader masks but num_graders=4" in reasons["five"]
    assert "skipped 4 of 5 cases" in caplog.text


def test_split_valid_cases_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="list of datalist entries"):
        split_valid_cases({"image": "x"})
    with pytest.raises(TypeError, match=r"data\[0\] must be a dict"):
        split_valid_cases(["x"])
    with pytest.raises(TypeError, match="callable"):
        split_valid_cases([], transform=3)
