"""Synthetic CT DICOM slices for the tests (tests/ is on ``sys.path`` through its conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

__all__ = ["INTERCEPT", "ORIGIN_XY", "write_slice"]

INTERCEPT = -1024
ORIGIN_XY = (-171.25, -198.5)


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def write_slice(
    path: Path, scan, k: int, z: float, hu: np.ndarray, instance: int, series_uid: str | None = None, rle: bool = False
) -> None:
    """One CT slice: signed int16 with intercept -1024, RLE-compressed (``rle``) or deflated (fast, small)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if rle else DeflatedExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    sop = _uid(scan.series_instance_uid, k, path.name)
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.Modality = "CT"
    ds.PatientID = scan.patient_id
    ds.StudyInstanceUID = scan.study_instance_uid
    ds.SeriesInstanceUID = series_uid or scan.series_instance_uid
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [ORIGIN_XY[0], ORIGIN_XY[1], float(z)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [float(scan.pixel_spacing), float(scan.pixel_spacing)]
    ds.SliceThickness = float(scan.slice_thickness)
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = INTERCEPT
    ds.RescaleSlope = 1
    stored = (hu.astype(np.int32) - INTERCEPT).astype(np.int16)
    ds.PixelData = stored.tobytes()
    if rle:
        ds.compress(RLELossless, stored)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
