"""The whole ``build`` path on synthetic DICOM series of real LIDC scans (UIDs, z positions, spacing)."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from synthetic_lidc import NODULE_HU, expected_annotation, expected_hu, plain_clusters, write_slice

from monai_car.data.dicom_series import DataError
from preprocessing.crops import window_hu
from preprocessing.lidc import main
from preprocessing.lidc_build import BuildConfig, build_dataset
from preprocessing.pylidc_index import import_pylidc


def _items(out, name="datalist.json"):
    doc = json.loads((out / name).read_text())
    return doc, [i for s in ("training", "validation", "test") for i in doc[s]]


def _zs(scan):
    return np.sort([z.val for z in scan.zvals])


def test_counts_match_plain_pylidc(built, test_scans):
    out, summary = built
    expected_nodules, expected_slices = Counter(), 0
    for scan in test_scans.values():
        for cluster in plain_clusters(scan):
            if len(cluster) > 4:
                continue
            expected_nodules[str(len(cluster))] += 1
            _, _, masks = import_pylidc().utils.consensus(cluster, clevel=0.5, pad=None, ret_masks=True)
            expected_slices += int(np.any(masks, axis=0).any(axis=(0, 1)).sum())
    counts = summary["counts"]
    assert counts["nodules_by_num_graders"] == dict(sorted(expected_nodules.items()))
    assert counts["slices"] == expected_slices
    assert counts["patches_3d"] == counts["nodules"] == sum(expected_nodules.values())
    assert counts["scans_processed"] == 4 and counts["skipped"] == 0
    assert json.loads((out / "summary.json").read_text())["counts"] == counts


def test_layout_datalist_and_splits(built):
    out, summary = built
    doc, items = _items(out)
    assert set(doc) >= {"name", "description", "split_seed", "training", "validation", "test"}
    assert "[-1000, 400]" in doc["description"]
    for split in ("training", "validation", "test"):
        resolved = load_decathlon_datalist(out / "datalist.json", data_list_key=split, base_dir=out)
        assert len(resolved) == len(doc[split])
        for item in resolved:
            assert item["image"].startswith(str(out)) and len(item["labels"]) == 4
            assert all(lab.startswith(str(out)) for lab in item["labels"])
            assert item["patient_id"].startswith("LIDC-IDRI-")  # not turned into a path
    patients = {s: {i["patient_id"] for i in doc[s]} for s in ("training", "validation", "test")}
    assert not (patients["training"] & patients["validation"]) and not (patients["training"] & patients["test"])
    assert not (patients["validation"] & patients["test"])
    # the patient with two scans: both scans present, in one split
    two = {i["series_uid"] for i in items if i["patient_id"] == "LIDC-IDRI-0365"}
    assert len(two) == 2
    assert summary["splits"] == {s: sorted(p) for s, p in patients.items()}
    img = nib.load(out / items[0]["image"])
    assert img.shape == (180, 180) and img.get_data_dtype() == np.float32
    lab = nib.load(out / items[0]["labels"][0])
    assert lab.get_data_dtype() == np.uint8 and np.allclose(lab.affine, img.affine)
    assert set(np.unique(np.asarray(lab.dataobj))) <= {0, 1}
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")


@pytest.mark.parametrize("datalist", ["datalist.json", "datalist_3d.json"])
def test_crops_line_up_with_database_masks(built, test_scans, unions, datalist):
    """Every voxel equals what the DICOM geometry says it must hold; every grader mask equals pylidc's mask."""
    out, _ = built
    _, items = _items(out, datalist)
    scans = {s.series_instance_uid: s for s in test_scans.values()}
    clusters = {uid: plain_clusters(s) for uid, s in scans.items()}
    for item in items:
        scan = scans[item["series_uid"]]
        img = nib.load(out / item["image"])
        image = np.asarray(img.dataobj)
        spacing = float(scan.pixel_spacing)
        hu = expected_hu(img.affine, image.shape, unions[scan.series_instance_uid], _zs(scan), spacing)
        np.testing.assert_allclose(image, window_hu(hu), atol=1e-6, err_msg=item["image"])
        index = int(re.search(r"_n(\d+)$", item["nodule_id"]).group(1))
        cluster = sorted(clusters[scan.series_instance_uid][index], key=lambda a: a.id)
        assert item["num_graders"] == len(cluster)
        labels = [np.asarray(nib.load(out / p).dataobj) for p in item["labels"]]
        for r, label in enumerate(labels):
            want = (
                expected_annotation(img.affine, image.shape, cluster[r], _zs(scan), spacing) if r < len(cluster) else 0
            )
            np.testing.assert_array_equal(label, want, err_msg=f"{item['image']} grader {r}")
        assert (np.any(labels, axis=0) <= (hu == NODULE_HU)).all()
        if datalist == "datalist.json":
            assert np.any(labels), "2D crops are made only where a grader marks the nodule"


def test_border_nodule_is_padded_and_reported(built):
    out, summary = built
    warned = [w for w in summary["warnings"] if "border" in w["reason"]]
    assert [w["nodule_id"] for w in warned] == ["LIDC-IDRI-0983_126785_n00"]
    _, items = _items(out)
    item = next(i for i in items if i["nodule_id"] == "LIDC-IDRI-0983_126785_n00")
    image = np.asarray(nib.load(out / item["image"]).dataobj)
    # bounding-box centre at column 458: the crop covers columns 369..548, the last 37 beyond the image. Higher
    # columns lie towards the patient's left, i.e. at the low end of the RAS-canonical first axis.
    air = np.all(image == 0.0, axis=1)
    assert air[:37].all() and not air[37:].any()
    assert image[37:].min() > 0.0


def test_resampled_spacing(tmp_path, dicom_root, test_scans, unions):
    root = tmp_path / "one"
    shutil.copytree(dicom_root / "LIDC-IDRI-0078", root / "LIDC-IDRI-0078")
    out = tmp_path / "out"
    summary = build_dataset(root, out, BuildConfig(crop_size=64, spacing=1.0, workers=1), progress=False)
    assert summary["counts"]["scans_processed"] == 1
    _, items = _items(out)
    scan = test_scans[("LIDC-IDRI-0078", "353824")]
    for item in items:
        img = nib.load(out / item["image"])
        assert img.shape == (64, 64)
        np.testing.assert_allclose(np.sqrt((img.affine[:3, :2] ** 2).sum(axis=0)), [1.0, 1.0])
        nearest = expected_hu(img.affine, img.shape, unions[scan.series_instance_uid], _zs(scan), 0.65) == NODULE_HU
        labels = np.any([np.asarray(nib.load(out / p).dataobj) for p in item["labels"]], axis=0)
        assert (labels & ~nearest).sum() <= max(2, 0.2 * labels.sum()), item["image"]


@pytest.fixture(scope="module")
def messy_build(tmp_path_factory, dicom_root, test_scans, unions):
    """0078 with one marked slice missing, a corrupt file, a file with broken pixel data; a 64 x 64 series with a
    real LIDC UID; a non-LIDC series. The build continues with what is usable."""
    base = tmp_path_factory.mktemp("messy")
    root = base / "root"
    scan = test_scans[("LIDC-IDRI-0078", "353824")]
    shutil.copytree(dicom_root / "LIDC-IDRI-0078", root / "LIDC-IDRI-0078")
    files = sorted((root / "LIDC-IDRI-0078").rglob("*.dcm"))
    import pydicom

    by_k = {}
    zs = _zs(scan)
    for f in files:
        z = float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2])
        by_k[int(np.argmin(np.abs(zs - z)))] = f
    marked = sorted({int(k) for ann in scan.annotations for k in ann.contour_slice_indices})
    missing_k, broken_k = marked[0], marked[-1]
    by_k[missing_k].unlink()
    ds = pydicom.dcmread(by_k[broken_k])
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(by_k[broken_k])
    (root / "LIDC-IDRI-0078" / "corrupt.dcm").write_bytes(b"not a dicom file" * 10)
    (root / "LIDC-IDRI-0078" / "README").write_text("no suffix, not DICOM: silently ignored")
    small = test_scans[("LIDC-IDRI-0365", "179144")]
    for k in range(3):
        write_slice(root / "small" / f"{k}.dcm", small, k, _zs(small)[k], np.zeros((64, 64), np.int16), k + 1)
    other = root / "other" / "x.dcm"
    write_slice(other, small, 0, 0.0, np.zeros((8, 8), np.int16), 1, series_uid="1.2.3.4.5.6.7")
    out = base / "out"
    summary = build_dataset(root, out, BuildConfig(workers=2), progress=False)
    return out, summary, scan, missing_k, broken_k, by_k


def test_messy_root_continues_and_reports(messy_build, built):
    out, summary, scan, missing_k, broken_k, by_k = messy_build
    reasons = [s["reason"] for s in summary["skipped"]]
    assert any("corrupt.dcm" in r and "not a readable DICOM file" in r for r in reasons)
    assert any(str(by_k[broken_k]) in r and "pixel data" in r for r in reasons)
    assert any("64 x 64" in r and "small" in r for r in reasons)
    assert any(s.get("series_uid") == "1.2.3.4.5.6.7" and "not in pylidc" in s["reason"] for s in summary["skipped"])
    missing_z = f"{_zs(scan)[missing_k]:.2f}"
    assert any("have no file" in w["reason"] and missing_z in w["reason"] for w in summary["warnings"])
    slice_skips = [s for s in summary["skipped"] if s["kind"] == "slice"]
    assert {round(s["slice_z"], 2) for s in slice_skips} == {
        round(_zs(scan)[missing_k], 2),
        round(_zs(scan)[broken_k], 2),
    }
    assert all("LIDC-IDRI-0078" in s["reason"] for s in slice_skips)
    _, items = _items(out)
    _, full = _items(built[0])
    full_0078 = [i for i in full if i["patient_id"] == "LIDC-IDRI-0078"]
    assert len(items) == len(full_0078) - len(slice_skips)
    assert summary["counts"]["scans_processed"] == 1 and summary["counts"]["scans_skipped"] == 1


def test_no_lidc_series_writes_nothing(tmp_path, test_scans):
    scan = test_scans[("LIDC-IDRI-0365", "179144")]
    write_slice(tmp_path / "root" / "a.dcm", scan, 0, 0.0, np.zeros((8, 8), np.int16), 1, series_uid="1.2.3")
    with pytest.raises(DataError, match="no LIDC-IDRI CT series"):
        build_dataset(tmp_path / "root", tmp_path / "out", BuildConfig(workers=1), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DICOM files"):
        build_dataset(tmp_path / "empty", tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == ["empty", "root"]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        build_dataset(tmp_path / "nowhere", tmp_path / "out", progress=False)


def test_existing_output_and_cli_errors(tmp_path, built, capsys):
    out, _ = built
    with pytest.raises(FileExistsError, match="--overwrite"):
        build_dataset(out.parent, out, progress=False)
    assert main(["build", "--dicom-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere" in capsys.readouterr().err
    with pytest.raises(ValueError, match="crop size"):
        build_dataset(tmp_path, tmp_path / "o", BuildConfig(crop_size=4))
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    assert "--3d" in capsys.readouterr().out
