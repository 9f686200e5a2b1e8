from __future__ import annotations

import json
from pathlib import Path

import pytest

from monai_car.data import load_segmentation_datalist, write_segmentation_datalist
from monai_car.data.segmentation_2d import datalist_metadata
from monai_car.transforms import BLACKBOX_KEY
from monai_car.utils import CarKeys


def _files(root: Path, names) -> list[Path]:
    out = []
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        out.append(p)
    return out


def test_write_then_load_round_trip_with_relative_paths(tmp_path):
    img, lab, bb = _files(tmp_path / "ds", ["img/a.png", "lab/a.png", "bb/a.png"])
    img2, lab2 = _files(tmp_path / "ds", ["img/b.png", "lab/b.png"])
    outside = _files(tmp_path, ["elsewhere/c.png"])[0]
    path = write_segmentation_datalist(
        tmp_path / "ds" / "datalist.json",
        {
            "training": [
                {"image": img, "label": lab, BLACKBOX_KEY: bb, "case_id": "a"},
                {"image": img2, "label": lab2},
            ],
            "test": [{"image": outside}],
        },
        {"label_format": "train_ids", "resolution": [8, 16]},
    )
    raw = json.loads(path.read_text())
    assert raw["training"][0] == {"image": "img/a.png", "label": "lab/a.png", "blackbox": "bb/a.png", "case_id": "a"}
    assert raw["test"][0]["image"] == str(outside)  # outside the datalist's folder: absolute
    assert datalist_metadata(path) == {"label_format": "train_ids", "resolution": [8, 16]}
    items = load_segmentation_datalist(path)
    assert [i[CarKeys.IMAGE] for i in items] == [str(img), str(img2)]
    assert items[0][BLACKBOX_KEY] == str(bb) and BLACKBOX_KEY not in items[1]
    assert [i[CarKeys.CASE_ID] for i in items] == ["a", "img_b.png"]
    # the folder can be moved: paths are relative to it
    moved = tmp_path / "moved"
    (tmp_path / "ds").rename(moved)
    assert load_segmentation_datalist(moved / "datalist.json")[0][CarKeys.LABEL] == str(moved / "lab/a.png")
    assert load_segmentation_datalist(moved / "datalist.json", "test", require_label=False)[0]["image"] == str(outside)


def test_missing_files_and_fields_are_named(tmp_path):
    img, lab = _files(tmp_path, ["a.png", "a_label.png"])
    path = write_segmentation_datalist(
        tmp_path / "dl.json", {"training": [{"image": img, "label": lab, BLACKBOX_KEY: tmp_path / "gone.png"}]}
    )
    with pytest.raises(
        FileNotFoundError, match=r"entry 0 of split 'training' names blackbox 'gone.png'.*does not exist"
    ):
        load_segmentation_datalist(path)
    assert load_segmentation_datalist(path, check_files=False)[0][BLACKBOX_KEY] == str(tmp_path / "gone.png")
    path = write_segmentation_datalist(tmp_path / "dl2.json", {"training": [{"image": img}], "validation": []})
    with pytest.raises(ValueError, match="has no 'label' path"):
        load_segmentation_datalist(path)
    assert load_segmentation_datalist(path, require_label=False)[0]["image"] == str(img)
    with pytest.raises(ValueError, match="has no 'blackbox' path"):
        load_segmentation_datalist(path, require_label=False, require_blackbox=True)
    with pytest.raises(ValueError, match=r"no split 'test'.*\['training', 'validation'\]"):
        load_segmentation_datalist(path, "test")
    with pytest.raises(ValueError, match="no entries"):
        load_segmentation_datalist(path, "validation")
    assert load_segmentation_datalist(path, "validation", allow_empty=True) == []
    with pytest.raises(FileNotFoundError, match="does not exist.*dl.json"):
        load_segmentation_datalist(tmp_path / "nope.json")


def test_duplicate_case_ids_and_bad_input(tmp_path):
    img, lab = _files(tmp_path, ["a.png", "b.png"])
    path = write_segmentation_datalist(
        tmp_path / "dl.json",
        {"training": [{"image": img, "label": lab, "case_id": "x"}, {"image": lab, "label": img, "case_id": "x"}]},
    )
    with pytest.raises(ValueError, match="same case id 'x'"):
        load_segmentation_datalist(path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_segmentation_datalist(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="clashes with a metadata field"):
        write_segmentation_datalist(tmp_path / "x.json", {"training": []}, {"training": 1})
    with pytest.raises(ValueError, match="'image' path"):
        write_segmentation_datalist(tmp_path / "x.json", {"training": [{"label": lab}]})
    assert not (tmp_path / "x.json").exists()
