from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from monai_car.data.dicom import load_dicom_series
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
    with pytest.raises(ValueError, match="2 series"):
        load_dicom_series(tmp_path / "two")
    volume, _ = load_dicom_series(tmp_path / "two", series_uid="1.2.3.5")
    assert volume.shape[-1] == 3
    with pytest.raises(ValueError, match="no series"):
        load_dicom_series(tmp_path / "two", series_uid="9.9")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no DICOM image slices"):
        load_dicom_series(tmp_path / "empty")
