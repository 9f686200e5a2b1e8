"""AtomicNibabelWriter: MONAI's SaveImaged through an atomic NIfTI writer."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import LoadImaged, SaveImaged

from monai_car.data.image_writer import AtomicNibabelWriter


def _loaded(tmp_path) -> dict:
    """A 2D crop as MONAI loads it: a channel-first MetaTensor with its file name and affine."""
    nib.save(
        nib.Nifti1Image(np.ones((8, 6), np.float32), np.diag([0.7, 0.7, 1.0, 1.0])), str(tmp_path / "crop_01.nii.gz")
    )
    return LoadImaged("pred", image_only=True, ensure_channel_first=True)({"pred": str(tmp_path / "crop_01.nii.gz")})


def test_save_imaged_writes_through_the_atomic_writer(tmp_path):
    save = SaveImaged(
        "pred",
        output_dir=str(tmp_path / "out"),
        output_postfix="seg",
        separate_folder=False,
        resample=False,
        print_log=False,
        output_dtype=np.uint8,
        writer="monai_car.data.image_writer.AtomicNibabelWriter",
    )
    save(_loaded(tmp_path))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["crop_01_seg.nii.gz"]  # no temporary file left
    img = nib.load(str(tmp_path / "out" / "crop_01_seg.nii.gz"))
    assert img.shape == (8, 6) and img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, np.diag([0.7, 0.7, 1.0, 1.0]))


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", fail)
    writer = AtomicNibabelWriter()
    writer.set_data_array(torch.ones(1, 4, 4), channel_dim=0)
    with pytest.raises(OSError, match="disk full"):
        writer.write(tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []
