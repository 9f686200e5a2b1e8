from __future__ import annotations

import json
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_car.data import load_car_datalist, make_case_id, training_geometry
from monai_car.utils import CarKeys, CheckpointGeometryError


def _write_case(root: Path, name: str, num_graders: int = 4, shape=(12, 10)) -> dict:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(rng.random(shape, dtype=np.float32), np.eye(4)), root / "images" / f"{name}.nii.gz")
    labels = []
    for r in range(num_graders):
        m = (rng.random(shape) > 0.5).astype(np.uint8)
        nib.save(nib.Nifti1Image(m, np.eye(4)), root / "masks" / f"{name}_g{r}.nii.gz")
        labels.append(f"masks/{name}_g{r}.nii.gz")
    return {
        "image": f"images/{name}.nii.gz",
        "labels": labels,
        "patient_id": "LIDC-IDRI-0001",
        "series_uid": "1.2.3",
        "nodule_id": "0",
        "slice_z": -12.5,
        "num_graders": num_graders,
    }


def _write_dataset(root: Path, splits: dict[str, list[dict]], name: str = "datalist.json") -> Path:
    content = {"name": "synthetic", "description": "test", "split_seed": 0, **splits}
    (root / name).write_text(json.dumps(content))
    return root


@pytest.fixture()
def dataset(tmp_path) -> Path:
    return _write_dataset(
        tmp_path,
        {
            "training": [_write_case(tmp_path, "p1_n0_z-12.5"), _write_case(tmp_path, "p1_n0_z-10.0")],
            "validation": [_write_case(tmp_path, "p2_n1_z3.0")],
            "test": [],
        },
    )


def test_loads_absolute_paths_and_case_ids(dataset):
    items = load_car_datalist(dataset, "training")
    assert len(items) == 2
    for item in items:
        assert Path(item[CarKeys.IMAGE]).is_absolute() and Path(item[CarKeys.IMAGE]).is_file()
        assert len(item[CarKeys.LABELS]) == 4
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in item[CarKeys.LABELS])
        assert item["patient_id"] == "LIDC-IDRI-0001" and item["slice_z"] == -12.5
    assert [i[CarKeys.CASE_ID] for i in items] == ["images_p1_n0_z-12.5", "images_p1_n0_z-10.0"]
    assert load_car_datalist(dataset, "test", allow_empty=True) == []
    assert len(load_car_datalist(str(dataset), split="validation")) == 1


def test_other_string_fields_are_not_turned_into_paths(dataset):
    # MONAI's load_decathlon_datalist would turn this patient_id into a path because the folder exists
    (dataset / "LIDC-IDRI-0001").mkdir()
    items = load_car_datalist(dataset)
    assert items[0]["patient_id"] == "LIDC-IDRI-0001"


def test_missing_dataset_dir_says_how_to_build_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*preprocessing\.lidc build"):
        load_car_datalist(tmp_path / "nope")


def test_missing_datalist_names_the_file(dataset):
    with pytest.raises(FileNotFoundError, match=r"datalist_3d\.json does not exist"):
        load_car_datalist(dataset, datalist_name="datalist_3d.json")


def test_empty_split_names_the_file_and_the_split(dataset):
    with pytest.raises(ValueError, match=r"datalist\.json: split 'test' is empty \(cases per split: training 2, "
                       r"validation 1, test 0\)"):  # fmt: skip
        load_car_datalist(dataset, "test")


def test_missing_split_lists_the_splits(dataset):
    with pytest.raises(KeyError, match=r"no split 'train'.*'training'"):
        load_car_datalist(dataset, "train")


def test_missing_label_file_names_entry_and_path(dataset):
    (dataset / "masks" / "p1_n0_z-10.0_g2.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"training\[1\] \(images/p1_n0_z-10\.0\.nii\.gz\).*grader 2 mask"):
        load_car_datalist(dataset)
    assert len(load_car_datalist(dataset, check_files=False)) == 2


def test_missing_image_file_names_entry(dataset):
    (dataset / "images" / "p2_n1_z3.0.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"validation\[0\].*image 'images/p2_n1_z3\.0\.nii\.gz'"):
        load_car_datalist(dataset, "validation")


def test_entry_without_labels(tmp_path):
    case = _write_case(tmp_path, "a")
    del case["labels"]
    _write_dataset(tmp_path, {"test": [case]})
    with pytest.raises(ValueError, match=r"test\[0\].*has no 'labels'"):
        load_car_datalist(tmp_path, "test")
    items = load_car_datalist(tmp_path, "test", require_labels=False)
    assert items[0][CarKeys.LABELS] == []


def test_malformed_content(tmp_path):
    (tmp_path / "datalist.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_car_datalist(tmp_path)
    _write_dataset(tmp_path, {"training": [{"labels": []}]})
    with pytest.raises(ValueError, match=r"training\[0\] has no 'image'"):
        load_car_datalist(tmp_path)
    case = _write_case(tmp_path, "b")
    case["labels"] = "masks/b_g0.nii.gz"
    _write_dataset(tmp_path, {"training": [case]})
    with pytest.raises(ValueError, match="must be a list of paths"):
        load_car_datalist(tmp_path)


def test_duplicate_case_ids(tmp_path):
    a, b = _write_case(tmp_path, "a"), _write_case(tmp_path, "b")
    a["case_id"] = b["case_id"] = "same"
    _write_dataset(tmp_path, {"training": [a, b]})
    with pytest.raises(ValueError, match="share case id 'same'"):
        load_car_datalist(tmp_path)


def test_make_case_id():
    assert make_case_id({"image": "x/LIDC 0001/n0.nii"}) == "x_LIDC_0001_n0"
    assert make_case_id({"image": "/data/set/a/b.nii.gz"}, "/data/set") == "a_b"
    assert make_case_id({"image": "a.nii.gz", "case_id": "c/1"}) == "c_1"
    with pytest.raises(KeyError):
        make_case_id({})


def test_training_geometry_adds_the_data_sets_preprocessing(tmp_path):
    _write_dataset(tmp_path, {"training": []})
    assert training_geometry({"crop_size": 48}, tmp_path).settings == {"crop_size": 48}  # nothing stated
    content = json.loads((tmp_path / "datalist.json").read_text())
    content.update(hu_window=[-1000, 400], in_plane_spacing=None)
    (tmp_path / "datalist.json").write_text(json.dumps(content))
    g = training_geometry({"crop_size": 48}, tmp_path)
    assert g.settings == {"crop_size": 48, "hu_window": [-1000, 400], "in_plane_spacing": None}
    with pytest.raises(CheckpointGeometryError, match=r"hu_window: trained with \[-1200, 600\].*datalist\.json: use a"):
        g.check({"crop_size": 48, "hu_window": [-1200, 600], "in_plane_spacing": None})
    content["hu_window"] = [400, -1000]
    (tmp_path / "datalist.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"datalist\.json: 'hu_window' must be \[low, high\]"):
        training_geometry({"crop_size": 48}, tmp_path)
    content.update(hu_window=[-1000, 400], in_plane_spacing=-1)
    (tmp_path / "datalist.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match="'in_plane_spacing' must be a positive number"):
        training_geometry({"crop_size": 48}, tmp_path)
