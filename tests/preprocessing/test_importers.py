from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image

from monai_car.data.dicom_series import DataError
from preprocessing.importers import import_dataset
from preprocessing.lidc import main

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lidc_crops_sample"


def _sample():
    if not SAMPLE.is_dir():
        pytest.skip(f"the real LIDC sample {SAMPLE} is absent (it lives outside the repository)")
    return SAMPLE


def _items(out):
    doc = json.loads((out / "datalist.json").read_text())
    return doc, [dict(i, split=s) for s in ("training", "validation", "test") for i in doc[s]]


def _array(out, rel):
    """A stored 2D NIfTI back in the source's [row, column] layout (the importer writes RAS-canonical)."""
    return np.asarray(nib.load(out / rel).dataobj).T[::-1, ::-1]


def test_image_label_folders_on_real_sample(tmp_path):
    out = tmp_path / "sample"
    summary = import_dataset("image-label-folders", _sample(), out, workers=2, progress=False)
    doc, items = _items(out)
    assert [len(doc[s]) for s in ("training", "validation", "test")] == [19, 0, 9]
    assert summary["counts"]["cases"] == 28 and summary["skipped"] == []
    case = SAMPLE / "training" / "3"
    item = next(i for i in items if i["source"] == str(case))
    image = np.asarray(Image.open(case / "image_4.jpg").convert("L"))
    np.testing.assert_allclose(_array(out, item["image"]), image / 255.0, atol=1e-6)
    marked = 0
    for r in range(4):
        expected = np.asarray(Image.open(case / f"label{r}_.jpg").convert("L")) >= 128
        np.testing.assert_array_equal(_array(out, item["labels"][r]), expected)
        marked += bool(expected.any())
    assert item["num_graders"] == marked and item["source_index"] == 4
    assert item["patient_id"] is None and item["slice_z"] is None
    resolved = load_decathlon_datalist(out / "datalist.json", data_list_key="test", base_dir=out)
    assert all(os.path.isfile(lab) for i in resolved for lab in i["labels"])


def test_validation_carved_from_training_and_bad_mask_size(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(_sample() / "training", src / "training")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(src / "training" / "5" / "label2_.jpg")
    out = tmp_path / "out"
    summary = import_dataset("image-label-folders", src, out, val_fraction=0.2, workers=1, progress=False)
    doc, _ = _items(out)
    assert [len(doc[s]) for s in ("training", "validation", "test")] == [14, 4, 0]
    (skip,) = summary["skipped"]
    assert "label2_.jpg is 64 x 64" in skip["reason"] and "128 x 128" in skip["reason"]


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_prob_unet_png_layouts(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "png"
    for split in ("train", "val", "test"):
        for patient in (f"LIDC-IDRI-00{len(split)}1", f"LIDC-IDRI-00{len(split)}2"):
            image = rng.integers(0, 256, (180, 180), dtype=np.uint8)
            _png(src / split / "images" / patient / "z-105.5_c0.png", image)
            for r in range(4):
                mask = np.zeros((180, 180), np.uint8)
                mask[80 : 90 + r, 80:100] = 255 if r % 2 else 1  # 0/255 and 0/1 PNGs both occur
                _png(src / split / "gt" / patient / f"z-105.5_c0_l{r}.png", mask)
    out = tmp_path / "out"
    import_dataset("prob-unet-png", src, out, workers=1, progress=False)
    doc, items = _items(out)
    assert [len(doc[s]) for s in ("training", "validation", "test")] == [2, 2, 2]
    item = doc["validation"][0]
    assert item["slice_z"] == 105.5 and item["nodule_id"] == f"{item['patient_id']}_c0"
    assert _array(out, item["labels"][2]).sum() == 12 * 20 and item["num_graders"] == 4
    # no split folders: seeded split by patient; a missing gt is reported with the file name
    flat = tmp_path / "flat"
    shutil.copytree(src / "train", flat)
    _png(flat / "images" / "LIDC-IDRI-0999" / "z-1.0_c0.png", np.zeros((180, 180), np.uint8))
    summary = import_dataset(
        "prob-unet-png", flat, tmp_path / "out2", split_seed=3, split_fractions=(0.5, 0, 0.5), workers=1, progress=False
    )
    assert summary["counts"]["cases"] == 2 and summary["split_source"] == "seeded split by group"
    assert summary["counts"]["groups_per_split"] == {"training": 1, "validation": 0, "test": 1}
    assert "z-1.0_c0_l<r>.png" in summary["skipped"][0]["reason"]


def test_pickle_import_and_refusal(tmp_path):
    rng = np.random.default_rng(1)
    data = {}
    for n in range(4):
        masks = [(rng.random((128, 128)) > 0.9).astype(np.uint8) for _ in range(4)]
        data[f"LIDC-IDRI-000{n}_slice_{n}"] = {"image": rng.random((128, 128)), "masks": masks, "series_uid": f"1.{n}"}
    data["broken"] = {"image": np.zeros((128, 128))}
    path = tmp_path / "data_lidc.pickle"
    path.write_bytes(pickle.dumps(data))
    out = tmp_path / "out"
    summary = import_dataset("pickle", path, out, workers=1, progress=False)
    _, items = _items(out)
    assert len(items) == 4 and "'broken'" in summary["skipped"][0]["reason"]
    item = next(i for i in items if i["nodule_id"] == "LIDC-IDRI-0002_slice_2")
    src = data["LIDC-IDRI-0002_slice_2"]
    np.testing.assert_allclose(_array(out, item["image"]), src["image"], atol=1e-6)
    np.testing.assert_array_equal(_array(out, item["labels"][3]), src["masks"][3])
    assert item["patient_id"] == "LIDC-IDRI-0002" and item["series_uid"] == "1.2"
    assert len({i["split"] for i in items}) == 3  # 4 patients: 2 / 1 / 1

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(DataError, match="refusing to load"):
        import_dataset("pickle", evil, tmp_path / "o3", progress=False)
    assert not (tmp_path / "o3").exists()


def test_phiseg_hdf5(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "data_lidc.hdf5"
    truth = {}
    with h5py.File(path, "w") as f:
        for group, n in (("train", 3), ("val", 1), ("test", 2)):
            images = rng.random((n, 128, 128))
            labels = (rng.random((n, 128, 128, 4)) > 0.95).astype(np.uint8)
            g = f.create_group(group)
            g.create_dataset("images", data=images - 0.5)
            g.create_dataset("labels", data=labels)
            g.create_dataset("uids", data=np.arange(n) + 100 * len(group))
            truth[group] = (images, labels)
        bad = f.create_group("extra_test")
        bad.create_dataset("images", data=np.zeros((1, 8, 8)))
    out = tmp_path / "out"
    summary = import_dataset("phiseg-hdf5", path, out, workers=2, progress=False)
    doc, _ = _items(out)
    assert [len(doc[s]) for s in ("training", "validation", "test")] == [3, 1, 2]
    assert "extra_test" in summary["skipped"][0]["reason"]
    item = doc["test"][1]
    images, labels = truth["test"]
    np.testing.assert_allclose(_array(out, item["image"]), images[1], atol=1e-6)
    for r in range(4):
        np.testing.assert_array_equal(_array(out, item["labels"][r]), labels[1, ..., r])
    assert item["image_offset_added"] == 0.5


def test_unknown_format_and_cli(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown format 'nrrd'.*image-label-folders"):
        import_dataset("nrrd", tmp_path, tmp_path / "o")
    assert main(["import", "--format", "nrrd", str(tmp_path), str(tmp_path / "o")]) == 2
    assert "unknown format" in capsys.readouterr().err
    assert main(["import", "--format", "pickle", str(tmp_path / "none.pickle"), str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["import", "--format", "image-label-folders", str(tmp_path / "empty"), str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _hdf5(path, labels):
    with h5py.File(path, "w") as f:
        for group, n in (("train", 3), ("val", 1), ("test", 1)):
            g = f.create_group(group)
            g.create_dataset("images", data=np.full((n, 16, 16), 0.25))
            g.create_dataset("labels", data=np.repeat(labels[None], n, axis=0))


def test_non_binary_labels_are_refused_unless_mapped(tmp_path, capsys):
    labels = np.zeros((16, 16, 4), np.uint8)
    labels[4:8, 4:8, :2] = 2  # a 0/2 encoding: binarising it is a guess the user must make
    labels[9:11, 9:11, 3] = 1
    path = tmp_path / "data.hdf5"
    _hdf5(path, labels)
    with pytest.raises(
        DataError,
        match=r"data\.hdf5 \[test\] labels: grader labels hold the values \{0, 1, 2\}, "
        r"expected binary masks \(0/1\).*--label-threshold T",
    ):
        import_dataset("phiseg-hdf5", path, tmp_path / "o", workers=1, progress=False)
    assert not (tmp_path / "o").exists()
    assert main(["import", "--format", "phiseg-hdf5", str(path), str(tmp_path / "o"), "--quiet"]) == 2
    assert "hold the values {0, 1, 2}" in capsys.readouterr().err and not (tmp_path / "o").exists()
    # the explicit mapping: label >= 1 is the mask
    argv = ["import", "--format", "phiseg-hdf5", str(path), str(tmp_path / "o"), "--quiet", "--label-threshold", "1"]
    assert main(argv) == 0
    doc, _ = _items(tmp_path / "o")
    for r in range(4):
        np.testing.assert_array_equal(_array(tmp_path / "o", doc["test"][0]["labels"][r]), labels[..., r] >= 1)
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["label_threshold"] == 1.0

    # pickle: a 0/255 mask is not taken for 0/1
    masks = [np.zeros((8, 8), np.uint8) for _ in range(4)]
    masks[1][2:4, 2:4] = 255
    pkl = tmp_path / "data_lidc.pickle"
    pkl.write_bytes(pickle.dumps({"LIDC-IDRI-0001_s0": {"image": np.full((8, 8), 0.5), "masks": masks}}))
    with pytest.raises(DataError, match=r"data_lidc\.pickle \['LIDC-IDRI-0001_s0'\] mask 1: .*values \{0, 255\}"):
        import_dataset("pickle", pkl, tmp_path / "p", workers=1, progress=False)

    # PNG: 0/1 and 0/255 are binary; 0/2 stops the import, naming the mask file
    png = tmp_path / "png"
    _png(png / "images" / "LIDC-IDRI-0001" / "z-1.0_c0.png", np.zeros((8, 8), np.uint8))
    for r in range(4):
        _png(png / "gt" / "LIDC-IDRI-0001" / f"z-1.0_c0_l{r}.png", np.full((8, 8), 2 if r == 2 else 0, np.uint8))
    with pytest.raises(
        DataError,
        match=r"z-1\.0_c0_l2\.png: grader labels hold the values \{2\}, expected binary "
        r"masks \(0/1 or 0/255\)",
    ):
        import_dataset("prob-unet-png", png, tmp_path / "q", workers=1, progress=False)


def test_too_few_patients_for_the_split_is_an_error(tmp_path, capsys):
    masks = [np.zeros((8, 8), np.uint8) for _ in range(4)]
    one = {f"LIDC-IDRI-0001_slice_{k}": {"image": np.full((8, 8), 0.5), "masks": masks} for k in range(3)}
    pkl = tmp_path / "one.pickle"
    pkl.write_bytes(pickle.dumps(one))
    with pytest.raises(
        DataError,
        match=r"one\.pickle \(pickle\): the cases come from 1 patient\(s\) \(LIDC-IDRI-0001\); a split by patient with "
        r"--split-fractions 0\.7 0\.15 0\.15 needs at least 3 \(one for each of training, validation, test\) and "
        r"would leave validation, test empty; nothing is written\..*--split-fractions 1 0 0",
    ):
        import_dataset("pickle", pkl, tmp_path / "o", workers=1, progress=False)
    assert not (tmp_path / "o").exists()
    assert main(["import", "--format", "pickle", str(pkl), str(tmp_path / "o"), "--quiet"]) == 2
    assert "1 patient(s)" in capsys.readouterr().err and not (tmp_path / "o").exists()
    # the explicit rule: one split only
    summary = import_dataset("pickle", pkl, tmp_path / "o", split_fractions=(1, 0, 0), workers=1, progress=False)
    assert summary["counts"]["per_split"] == {"training": 3, "validation": 0, "test": 0}
    # two patients cannot fill three splits either
    two = dict(one, **{"LIDC-IDRI-0002_slice_0": one["LIDC-IDRI-0001_slice_0"]})
    pkl.write_bytes(pickle.dumps(two))
    with pytest.raises(DataError, match=r"come from 2 patient\(s\) \(LIDC-IDRI-0001, LIDC-IDRI-0002\)"):
        import_dataset("pickle", pkl, tmp_path / "o2", workers=1, progress=False)


def test_val_fraction_needs_two_training_patients(tmp_path):
    png = tmp_path / "png"
    for split in ("train", "test"):
        _png(png / split / "images" / "LIDC-IDRI-0001" / "z-1.0_c0.png", np.zeros((8, 8), np.uint8))
        _png(png / split / "gt" / "LIDC-IDRI-0001" / "z-1.0_c0_l0.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"--val-fraction 0\.2 .*training split holds 1 \(.*\), and at least 2"):
        import_dataset("prob-unet-png", png, tmp_path / "o", val_fraction=0.2, workers=1, progress=False)
