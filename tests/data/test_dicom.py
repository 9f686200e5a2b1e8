from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from monai_car.data.dicom import load_dicom_series
from monai_car.data.dicom_series import DataError
from monai_car.inferers import load_ct_volume

ROWS, COLS = 6, 9
SPACING = (0.7, 0.8)  # between rows, between columns
ORIGIN = (-100.0, 50.0, -30.0)


def _hu(r: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    return (-1000 + 10 * r + c + 100 * k).astype(np.int16)


def _write(folder: Path, series_uid: str, zs: list[float], orientation=(1, 0, 0, 0, 1, 0)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rr, cc = np.indices((ROWS, COLS))
    for k, z in enumerate(zs):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.Modality, ds.PatientID, ds.StudyInstanceUID = "CT", "P1", "1.2.3"
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = len(zs) - k  # opposite to z: only position sorting lines slices up
        ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], float(z)]
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing = list(SPACING)
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (_hu(rr, cc, k).astype(np.int32) + 1024).astype(np.int16).tobytes()
        ds.save_as(folder / f"{generate_uid()[-8:]}.dcm", enforce_file_format=True)


def test_volume_and_affine_match_the_headers(tmp_path):
    zs = [-30.0 + 2.5 * k for k in range(5)]
    _write(tmp_path / "s", "1.2.3.4", zs[::-1])  # files written in reverse z order
    volume, affine = load_dicom_series(tmp_path / "s")
    assert volume.shape == (COLS, ROWS, 5) and volume.dtype == np.float32
    # voxel (c, r, k) holds pixel (r, c) of the k-th slice by increasing z, in HU
    z_sorted = sorted(zs)
    k_written = [zs[::-1].index(z) for z in z_sorted]
    for c, r, k in [(0, 0, 0), (8, 5, 4), (3, 2, 1)]:
        assert volume[c, r, k] == _hu(np.array(r), np.array(c), k_written[k])
        # world position by hand: LPS = IPP_k + c * col_spacing * X + r * row_spacing * Y, then RAS flips x and y
        lps = np.array([ORIGIN[0] + c * SPACING[1], ORIGIN[1] + r * SPACING[0], z_sorted[k]])
        ras = lps * np.array([-1, -1, 1])
        np.testing.assert_allclose(affine @ np.array([c, r, k, 1.0]), [*ras, 1.0], atol=1e-6)


def test_ct_loader_reads_dicom_folders_like_nifti(tmp_path):
    _write(tmp_path / "s", "1.2.3.4", [0.0, 1.0, 2.0])
    volume, affine = load_ct_volume(tmp_path / "s")
    assert volume.shape == (COLS, ROWS, 3)
    assert np.linalg.det(affine[:3, :3]) != 0


def test_missing_slice_is_an_error_naming_the_folder(tmp_path):
    _write(tmp_path / "gap", "1.2.3.4", [0.0, 1.0, 2.0, 4.0, 5.0])
    with pytest.raises(ValueError, match=r"gap.*missing"):
        load_dicom_series(tmp_path / "gap")


def test_several_series_need_a_choice(tmp_path):
    _write(tmp_path / "two", "1.2.3.4", [0.0, 1.0])
    _write(tmp_path / "two", "1.2.3.5", [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"2 series .*one series per study folder.*series_uid=\.\.\."):
        load_dicom_series(tmp_path / "two")
    volume, _ = load_dicom_series(tmp_path / "two", series_uid="1.2.3.5")
    assert volume.shape[-1] == 3
    with pytest.raises(ValueError, match="no series"):
        load_dicom_series(tmp_path / "two", series_uid="9.9")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no DICOM image slices"):
        load_dicom_series(tmp_path / "empty")


class _Scan:
    """The attributes ``write_slice`` needs."""

    patient_id = "P2"
    study_instance_uid = "1.2.826.0.1.3680043.2.7"
    series_instance_uid = "1.2.826.0.1.3680043.2.7.1"
    pixel_spacing = 0.7
    slice_thickness = 1.0


def _slices(folder: Path, n: int = 6) -> list[Path]:
    from dicom_slices import write_slice

    paths = [folder / f"s{k:02d}.dcm" for k in range(n)]
    for k, path in enumerate(paths):
        write_slice(path, _Scan, k, float(k), np.full((4, 4), 10 * k, np.int16), k + 1, rle=True)
    return paths


def test_an_unreadable_slice_is_an_error_naming_it(tmp_path):
    paths = _slices(tmp_path / "s")
    paths[-1].write_bytes(b"\x00" * 100)  # the last slice: no gap would show it
    with pytest.raises(DataError, match=r"s: 1 of 6 DICOM file\(s\) cannot be read: .*s05\.dcm: not a readable DICOM"):
        load_dicom_series(tmp_path / "s")


def test_a_corrupt_middle_file_is_named_not_its_neighbour(tmp_path):
    paths = _slices(tmp_path / "s")
    paths[3].write_bytes(paths[3].read_bytes()[:300])  # truncated inside the header
    with pytest.raises(DataError) as info:
        load_dicom_series(tmp_path / "s")
    message = str(info.value)
    assert f"{paths[3]}: " in message and "truncated or damaged" in message
    assert str(paths[2]) not in message and str(paths[4]) not in message
    # pixel data that cannot be decoded names the file too
    paths = _slices(tmp_path / "p")
    paths[3].write_bytes(paths[3].read_bytes()[:-7])
    with pytest.raises(DataError, match=rf"{paths[3].name}: cannot read the pixel data"):
        load_dicom_series(tmp_path / "p")


def test_a_gap_names_the_slices_around_it(tmp_path):
    paths = _slices(tmp_path / "s")
    paths[3].unlink()
    with pytest.raises(ValueError, match=r"step 2\.000 mm between .*s02\.dcm and .*s04\.dcm.*missing"):
        load_dicom_series(tmp_path / "s")


def test_two_different_slices_at_one_position_are_an_error_naming_both(tmp_path):
    from dicom_slices import write_slice

    paths = _slices(tmp_path / "s")
    other = tmp_path / "s" / "z2_other.dcm"
    write_slice(other, _Scan, 9, 2.0, np.full((4, 4), 777, np.int16), 99, rle=True)
    with pytest.raises(
        DataError,
        match=rf"two different slices at one position \(z = 2 mm\): .*{paths[2].name} .*and "
        rf".*{other.name} .*hold different pixel data.*remove the wrong file",
    ):
        load_dicom_series(tmp_path / "s")


def test_an_identical_duplicate_is_dropped_with_a_warning_naming_it(tmp_path):
    import shutil

    paths = _slices(tmp_path / "s")
    copy = tmp_path / "s" / "s02_copy.dcm"
    shutil.copy(paths[2], copy)
    with pytest.warns(UserWarning, match=rf"dropped 1 duplicate slice.*{copy.name} \(a copy of .*{paths[2].name}\)"):
        volume, _ = load_dicom_series(tmp_path / "s")
    assert volume.shape == (4, 4, 6) and [float(volume[0, 0, k]) for k in range(6)] == [10.0 * k for k in range(6)]


def test_files_that_are_not_image_slices_are_ignored_with_a_warning(tmp_path):
    _slices(tmp_path / "s", n=3)
    (tmp_path / "s" / "README").write_text("not DICOM, no suffix")
    with pytest.warns(UserWarning, match=r"ignored 1 file\(s\) that are not DICOM image slices.*README"):
        volume, _ = load_dicom_series(tmp_path / "s")
    assert volume.shape[-1] == 3
