from __future__ import annotations

import importlib

import numpy as np
import pytest
from dicom_slices import write_slice

from monai_car.data.dicom_series import (
    DataError,
    find_dicom_files,
    group_series,
    match_slices,
    read_header,
    read_headers,
    read_hu,
    sort_series,
)


class _Scan:
    """The attributes ``write_slice`` needs, for a made-up series."""

    patient_id = "LIDC-IDRI-9999"
    study_instance_uid = "1.2.826.0.1.3680043.2.1"
    series_instance_uid = "1.2.826.0.1.3680043.2.1.1"
    pixel_spacing = 0.7
    slice_thickness = 2.5


def _series(folder, zs, instances, size=(4, 4)):
    for n, (z, inst) in enumerate(zip(zs, instances)):
        hu = np.full(size, int(z), dtype=np.int16)
        write_slice(folder / f"f{n}.dcm", _Scan, n, z, hu, inst)


def test_sorted_by_z_not_instance_number_and_duplicates_dropped(tmp_path):
    _series(tmp_path, [10.0, -5.0, 2.5, 2.5, 0.0], [1, 2, 3, 4, 5])
    (tmp_path / "notes.txt").write_text("ignored: not .dcm")
    files = find_dicom_files(tmp_path)
    assert [f.name for f in files] == ["f0.dcm", "f1.dcm", "f2.dcm", "f3.dcm", "f4.dcm"]
    headers, problems = read_headers(files, workers=1, progress=False)
    assert problems == []
    ((uid, series),) = group_series(headers).items()
    s = sort_series(series, expected_size=(4, 4))
    assert s.z.tolist() == [-5.0, 0.0, 2.5, 10.0]
    assert s.duplicates == [str(tmp_path / "f3.dcm")]  # same z as f2, higher InstanceNumber
    assert s.duplicate_of == {str(tmp_path / "f3.dcm"): str(tmp_path / "f2.dcm")}
    assert [sl.instance_number for sl in s.slices] == [2, 5, 3, 1]
    with pytest.raises(DataError, match="4 x 4 .*512 x 512"):
        sort_series(series)


def test_match_by_z_reports_missing_and_extra(tmp_path):
    _series(tmp_path, [0.0, 2.5, 7.5, 100.0], [1, 2, 3, 4])
    headers, _ = read_headers(find_dicom_files(tmp_path), progress=False)
    s = sort_series(headers, expected_size=None)
    matched, extra = match_slices([0.0, 2.5, 5.0, 7.5], s)
    assert [m.z if m else None for m in matched] == [0.0, 2.5, None, 7.5]
    assert extra == [str(tmp_path / "f3.dcm")]
    near, _ = match_slices([0.04, 2.5], s, tolerance=0.05)
    assert near[0] is not None and match_slices([0.2], s, tolerance=0.05)[0] == [None]


def test_hu_from_rescale_slope_and_intercept(tmp_path):
    import pydicom

    path = tmp_path / "a.dcm"
    hu = np.array([[-1000, 0], [40, 1200]], dtype=np.int16)
    write_slice(path, _Scan, 0, 1.0, hu, 1)
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.copy()
    ds.RescaleSlope, ds.RescaleIntercept = 2, -3000
    ds.save_as(path)
    header = read_header(path)
    np.testing.assert_array_equal(read_hu(header), stored.astype(np.float32) * 2 - 3000)
    assert header.pixel_spacing == (0.7, 0.7) and header.position[2] == 1.0


def test_bad_files_are_named(tmp_path):
    (tmp_path / "bad.dcm").write_bytes(b"\x00" * 50)
    (tmp_path / "LICENSE").write_text("not dicom, no suffix")
    assert read_header(tmp_path / "LICENSE") is None
    with pytest.raises(DataError, match="bad.dcm: not a readable DICOM file"):
        read_header(tmp_path / "bad.dcm")
    headers, problems = read_headers(find_dicom_files(tmp_path), progress=False)
    assert headers == [] and [p["path"] for p in problems] == [str(tmp_path / "bad.dcm")]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        find_dicom_files(tmp_path / "missing")


@pytest.mark.parametrize(
    "keep, rle, reason",
    [
        (200, False, r"its file meta information ends early \(no TransferSyntaxUID\)"),
        (300, False, "it holds no data elements"),
        (0.5, True, "a CT image slice without ImagePositionPatient and SeriesInstanceUID"),
    ],
)
def test_truncated_ct_slice_is_damaged_not_a_non_image_object(tmp_path, keep, rle, reason):
    # a CT slice cut inside its header parses without error but lacks its position: it must be named, not dropped
    path = tmp_path / "f0.dcm"
    write_slice(path, _Scan, 0, 0.0, np.zeros((4, 4), np.int16), 1, rle=rle)
    data = path.read_bytes()
    path.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    with pytest.raises(DataError, match=rf"f0\.dcm: {reason} \(a truncated or damaged file\)"):
        read_header(path)


def test_non_axial_series_is_refused(tmp_path):
    import pydicom

    _series(tmp_path, [0.0], [1])
    ds = pydicom.dcmread(tmp_path / "f0.dcm")
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal
    ds.save_as(tmp_path / "f0.dcm")
    headers, _ = read_headers([tmp_path / "f0.dcm"], progress=False)
    with pytest.raises(DataError, match="not axial"):
        sort_series(headers, expected_size=None)


def test_exported_from_monai_car_data():
    import monai_car.data as data
    from monai_car.data import dicom_series

    for name in dicom_series.__all__:
        assert name in data.__all__ and getattr(data, name) is getattr(dicom_series, name)
    for name in data.__all__:  # every public name resolves (the package loads its submodules on first use)
        assert getattr(data, name) is not None and name in dir(data)
    assert data.dicom is importlib.import_module("monai_car.data.dicom")
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        data.no_such_name  # noqa: B018
