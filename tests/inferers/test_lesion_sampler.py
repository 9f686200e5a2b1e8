from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_car.inferers import SUMMARY_COLUMNS, Lesion, LesionSampleSetPredictor, lesions_from_csv, reorient
from monai_car.networks.nets import CalibrationSegNet, CARNet, RefinementUNet


def _net():
    torch.manual_seed(0)
    f = CalibrationSegNet(2, 1, 2, channels=(4, 8), convs_per_block=(1, 1))
    g = RefinementUNet(2, 3, 2, channels=(4, 8, 8, 8, 8), noise_dim=4)
    return CARNet(f, g)


def _ct(tmp_path):
    """An LPS-ordered CT (like DICOM) of air with a bright 'nodule' ball, stored with its NIfTI (RAS) affine."""
    shape = (40, 36, 12)
    aff = np.diag([-0.8, -0.8, 2.0, 1.0])
    aff[:3, 3] = [100.0, 80.0, -50.0]
    vol = np.full(shape, -800.0, dtype=np.float32)
    ii, jj, kk = np.indices(shape)
    ball = (ii - 30) ** 2 + (jj - 5) ** 2 + ((kk - 6) * 2.5) ** 2 <= 16
    vol[ball] = 40.0
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(vol, aff), path)
    centre_ras = aff @ np.array([30, 5, 6, 1.0])
    return path, vol, aff, centre_ras[:3]


def test_study_outputs_overlay_on_ct(tmp_path):
    path, vol, aff, centre = _ct(tmp_path)
    lps = centre * np.array([-1, -1, 1])
    csv_path = tmp_path / "lesions.csv"
    csv_path.write_text(f"lesion_id,x,y,z\nn1,{lps[0]},{lps[1]},{lps[2]}\n")
    predictor = LesionSampleSetPredictor(_net(), num_samples=3, crop_size=16, half_extent_mm=4.0, montage=False)
    summary = predictor.run_study(path, lesions_from_csv(csv_path), tmp_path / "out", study_id="s1")
    rows = list(csv.DictReader(summary.open()))
    assert list(rows[0].keys()) == SUMMARY_COLUMNS and len(rows) == 1
    assert rows[0]["num_slices"] == "5" and rows[0]["num_samples"] == "3"  # +-4 mm at 2 mm slices
    case = tmp_path / "out" / "s1" / "n1"
    samples = nib.load(case / "samples.nii.gz")
    image = nib.load(case / "image.nii.gz")
    assert samples.shape == (16, 16, 5, 3)
    np.testing.assert_allclose(samples.affine, image.affine)
    # every slab voxel holds the windowed CT value found at the same world position in the original CT
    img = np.asarray(image.dataobj)
    inv = np.linalg.inv(aff)
    for a, b, c in [(0, 0, 0), (7, 8, 2), (15, 3, 4)]:
        world = image.affine @ np.array([a, b, c, 1.0])
        i, j, k = np.rint(inv @ world).astype(int)[:3]
        inside = 0 <= i < vol.shape[0] and 0 <= j < vol.shape[1]
        hu = vol[i, j, k] if inside else -1000.0
        assert img[a, b, c] == pytest.approx(np.clip((hu + 1000) / 1400, 0, 1), abs=1e-5)
    full = nib.load(tmp_path / "out" / "s1" / "mean_foreground_full.nii.gz")
    assert full.shape == vol.shape
    # the full-grid map is the CT's grid up to axis flips: reoriented back, its affine is the CT's
    back, back_aff = reorient(np.asarray(full.dataobj), full.affine, "".join(nib.aff2axcodes(aff)))
    np.testing.assert_allclose(back_aff, aff, atol=1e-5)
    # and it holds the slab's mean foreground where the slab lies
    mean_fg = np.asarray(nib.load(case / "sample_mean.nii.gz").dataobj)
    world = image.affine @ np.array([8, 8, 2, 1.0])
    i, j, k = np.rint(inv @ world).astype(int)[:3]
    assert back[i, j, k] == pytest.approx(mean_fg[8, 8, 2], abs=1e-5)


def test_reproducible_and_order_independent(tmp_path):
    path, _, _, centre = _ct(tmp_path)
    predictor = LesionSampleSetPredictor(_net(), num_samples=2, crop_size=16, half_extent_mm=2.0, seed=5)
    vol, aff = nib.load(path).get_fdata().astype(np.float32), nib.load(path).affine
    vol, aff = reorient(vol, aff, "RAS")
    lesion = Lesion("a", centre)
    a = predictor.predict_lesion(vol, aff, lesion)
    b = predictor.predict_lesion(vol, aff, lesion)
    np.testing.assert_array_equal(a.sample_set.samples, b.sample_set.samples)
    assert a.sample_set.case_id == "a" and a.sample_set.samples.shape[0] == predictor.num_samples


def test_lesion_outside_volume(tmp_path):
    path, _, _, _ = _ct(tmp_path)
    predictor = LesionSampleSetPredictor(_net(), num_samples=2, crop_size=16)
    with pytest.raises(ValueError, match="outside the volume"):
        predictor.run_study(path, [Lesion("far", np.array([500.0, 0.0, 0.0]))], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predictor.run_study(tmp_path / "missing.nii.gz", [Lesion("a", np.zeros(3))], tmp_path / "out")


def test_a_failed_run_leaves_the_previous_run_whole_and_a_new_run_drops_old_folders(tmp_path):
    path, _, aff, centre = _ct(tmp_path)
    inside, outside = Lesion("n1", centre), Lesion("far", np.array([500.0, 0.0, 0.0]))
    predictor = LesionSampleSetPredictor(_net(), num_samples=2, crop_size=16, half_extent_mm=2.0, montage=False)
    out = tmp_path / "inference"
    first = predictor.run([{"image": path, "lesions": [inside], "study": "a"},
                           {"image": path, "lesions": [inside], "study": "b"}], out)  # fmt: skip
    assert first == [out / "a" / "summary.csv", out / "b" / "summary.csv"] and all(p.is_file() for p in first)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="outside the volume"):  # the second study fails after the first was done
        predictor.run([{"image": path, "lesions": [inside], "study": "c"},
                       {"image": path, "lesions": [outside], "study": "d"}], out)  # fmt: skip
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before, "a failed run must not touch the previous run's outputs"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".inference")) == []
    (tmp_path / ".inference.tmp-killed").mkdir()  # what kill -9 leaves behind
    predictor.run([{"image": path, "lesions": [inside], "study": "b"}], out)
    assert sorted(p.name for p in out.iterdir()) == ["b"], "study a of the earlier run is not this run's"
    assert not (tmp_path / ".inference.tmp-killed").exists()


def test_a_truncated_ct_volume_or_lesion_mask_is_named(tmp_path):
    from monai_car.inferers import lesions_from_mask, load_ct_volume
    from monai_car.transforms import ImageReadError

    volume = np.random.default_rng(0).random((16, 16, 8), dtype=np.float32)  # incompressible: cut in the voxels
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "ct.nii.gz"))
    data = (tmp_path / "ct.nii.gz").read_bytes()
    (tmp_path / "bad.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=rf"cannot read CT volume {tmp_path / 'bad.nii.gz'}: EOFError"):
        load_ct_volume(tmp_path / "bad.nii.gz")
    with pytest.raises(ImageReadError, match="cannot read lesion mask"):
        lesions_from_mask(tmp_path / "bad.nii.gz")
