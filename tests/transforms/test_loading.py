"""Image loading naming the file on read errors; the one-image inference pre-processing."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd, LoadImaged

from monai_car.transforms import ImageReadError, NamedLoadImaged, get_inference_transforms, image_read_error


def _save(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _truncated(tmp_path):
    good = _save(tmp_path / "good.nii.gz", np.random.default_rng(0).random((32, 32), dtype=np.float32))
    data = good.read_bytes()
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    return bad


def test_a_truncated_file_is_named(tmp_path):
    bad = _truncated(tmp_path)
    with pytest.raises(EOFError):  # what MONAI alone says: no file named
        LoadImaged("image", image_only=True)({"image": str(bad)})
    with pytest.raises(ImageReadError, match=rf"cannot read image {bad}: EOFError: .*truncated, corrupt"):
        NamedLoadImaged("image", image_only=True)({"image": str(bad)})
    assert isinstance(NamedLoadImaged("image"), LoadImaged)  # tools that look for LoadImaged find it


def test_errors_that_already_name_the_file_or_a_missing_file_pass_unchanged(tmp_path):
    missing = tmp_path / "missing.nii.gz"
    assert image_read_error(missing, EOFError("x")) is None
    existing = _save(tmp_path / "a.nii.gz", np.zeros((4, 4), np.float32))
    assert image_read_error(existing, ValueError(f"{existing} is bad")) is None
    assert isinstance(image_read_error(existing, EOFError("eof"), "CT volume"), ImageReadError)
    with pytest.raises(Exception) as excinfo:
        NamedLoadImaged("image")({"image": str(missing)})
    assert not isinstance(excinfo.value, ImageReadError)


def test_inference_transforms_window_crop_and_invert(tmp_path):
    affine = np.diag([0.7, 0.7, 1.0, 1.0])
    hu = np.full((30, 36), -1000.0, np.float32)
    hu[10:20, 10:20] = 400.0
    path = _save(tmp_path / "ct.nii.gz", hu, affine)
    pre = get_inference_transforms(2, 32, hu_window=(-1000, 400))
    out = pre({"image": str(path)})
    image = out["image"]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0
    out["pred"] = MetaTensor(torch.rand(2, 32, 32))  # as CARSamplingInferer returns it
    inverted = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(out)
    assert tuple(inverted["pred"].shape) == (2, 30, 36)  # back on the input's grid
    with pytest.raises(RuntimeError) as excinfo:  # HU given as if it were a [0, 1] crop
        get_inference_transforms(2, 32)({"image": str(path)})
    assert "outside" in str(excinfo.value.__cause__)
    with pytest.raises(ValueError, match="hu_window"):
        get_inference_transforms(2, 32, hu_window=(400, -1000))
    with pytest.raises(ValueError, match="spatial_dims"):
        get_inference_transforms(4, 32)


def test_read_nifti_names_the_file(tmp_path):
    from monai_car.transforms import read_nifti

    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    data, read_affine = read_nifti(_save(tmp_path / "v.nii.gz", np.ones((4, 4, 2), np.int16), affine), dtype=np.float32)
    assert data.dtype == np.float32 and data.shape == (4, 4, 2)
    np.testing.assert_allclose(read_affine, affine)
    with pytest.raises(ImageReadError, match=r"cannot read CT volume .*bad\.nii\.gz: EOFError"):
        read_nifti(_truncated(tmp_path), "CT volume")
    with pytest.raises(FileNotFoundError):
        read_nifti(tmp_path / "missing.nii.gz")
