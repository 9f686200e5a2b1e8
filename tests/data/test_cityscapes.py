from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers import labels as cs_labels
from PIL import Image

from monai_car.data import (
    CITYSCAPES_VALIDATION_CITIES,
    build_cityscapes_datalist,
    find_cityscapes_cases,
    load_segmentation_datalist,
    split_cityscapes_cases,
)
from monai_car.data.cityscapes import main
from monai_car.data.segmentation_2d import datalist_metadata
from monai_car.transforms import BLACKBOX_KEY, get_eval_transforms_2d
from monai_car.utils import CarKeys

H, W = 16, 32  # the tiny "full resolution" of the test folder (aspect 1:2 as Cityscapes)
TRAIN = {"aachen": 2, "bremen": 1, "darmstadt": 1, "monchengladbach": 1, "ulm": 2}
VAL = {"frankfurt": 2, "lindau": 1}
IDS = np.array([label.id for label in cs_labels.labels if label.id >= 0], dtype=np.uint8)


def _stem(city: str, k: int) -> str:
    return f"{city}_{k:06d}_000019"


def _write_official(root: Path, blackbox: Path | None = None, bb_size=(H, W)) -> None:
    """The official layout: leftImg8bit/<split>/<city>/*_leftImg8bit.png, gtFine/... labelIds and labelTrainIds (as
    cityscapesscripts writes them: trainId, 255 for ignored), optional predictions <stem>.png."""
    rng = np.random.default_rng(0)
    for split, cities in (("train", TRAIN), ("val", VAL)):
        for city, n in cities.items():
            for k in range(n):
                stem = _stem(city, k)
                img_dir, gt_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
                img_dir.mkdir(parents=True, exist_ok=True)
                gt_dir.mkdir(parents=True, exist_ok=True)
                label_ids = np.kron(IDS[rng.integers(0, len(IDS), (H // 4, W // 4))], np.ones((4, 4), np.uint8))
                rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
                Image.fromarray(rgb).save(img_dir / f"{stem}_leftImg8bit.png")
                Image.fromarray(label_ids).save(gt_dir / f"{stem}_gtFine_labelIds.png")
                train_ids = np.vectorize(lambda i: cs_labels.id2label[int(i)].trainId % 256)(label_ids)
                Image.fromarray(train_ids.astype(np.uint8)).save(gt_dir / f"{stem}_gtFine_labelTrainIds.png")
                if blackbox is not None:
                    (blackbox / city).mkdir(parents=True, exist_ok=True)
                    pred = Image.fromarray(train_ids.astype(np.uint8)).resize((bb_size[1], bb_size[0]), Image.NEAREST)
                    pred.save(blackbox / city / f"{stem}.png")


def test_finds_cases_and_splits_like_the_papers(tmp_path):
    _write_official(tmp_path)
    train = find_cityscapes_cases(tmp_path, "train")
    val = find_cityscapes_cases(tmp_path, "val", label_format="train_ids")
    assert len(train) == sum(TRAIN.values()) and len(val) == sum(VAL.values())
    assert train[0].case_id == "aachen_000000_000019" and train[0].label.name.endswith("_gtFine_labelIds.png")
    assert val[0].label.name.endswith("_gtFine_labelTrainIds.png")
    splits = split_cityscapes_cases(train, val)
    assert {c.city for c in splits["validation"]} == set(CITYSCAPES_VALIDATION_CITIES)
    assert {c.city for c in splits["training"]} == {"aachen", "bremen"}
    assert [c.case_id for c in splits["test"]] == [c.case_id for c in val]
    assert len(splits["training"]) + len(splits["validation"]) == len(train)
    with pytest.raises(ValueError, match=r"validation cities \['munich'\]"):
        split_cityscapes_cases(train, val, ("munich",))


def test_datalist_reads_back_and_both_label_formats_give_the_same_classes(tmp_path):
    root = tmp_path / "cityscapes"
    _write_official(root)
    lists = {}
    for fmt in ("label_ids", "train_ids"):
        path = build_cityscapes_datalist(root, tmp_path / fmt, resolution=(8, 16), label_format=fmt)
        meta = datalist_metadata(path)
        assert meta["label_format"] == fmt and meta["resolution"] == [8, 16] and meta["ignore_index"] == 24
        lists[fmt] = {s: load_segmentation_datalist(path, s) for s in ("training", "validation", "test")}
        assert [len(v) for v in lists[fmt].values()] == [3, 4, 3]
        assert lists[fmt]["training"][0][CarKeys.CASE_ID] == "aachen_000000_000019"
    for a, b in zip(lists["label_ids"]["test"], lists["train_ids"]["test"]):
        la = get_eval_transforms_2d(label_format="label_ids", spatial_size=(8, 16))(a)[CarKeys.LABEL]
        lb = get_eval_transforms_2d(label_format="train_ids", spatial_size=(8, 16))(b)[CarKeys.LABEL]
        assert la.shape == (1, 8, 16) and torch.equal(la, lb)


def test_resized_copies_and_predictions(tmp_path):
    root, bb = tmp_path / "cityscapes", tmp_path / "deeplab"
    _write_official(root, blackbox=bb)
    out = tmp_path / "quarter"
    path = build_cityscapes_datalist(root, out, resolution=(8, 16), blackbox_dir=bb, write_resized=True)
    raw = json.loads(path.read_text())
    entry = raw["test"][0]
    assert entry["image"] == "leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png"
    assert entry[BLACKBOX_KEY] == "blackbox/val/frankfurt/frankfurt_000000_000019.png"
    item = load_segmentation_datalist(path, "test", require_blackbox=True)[0]
    with Image.open(item["image"]) as img:
        assert img.size == (16, 8)
    src = np.asarray(Image.open(root / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png"))
    small = np.asarray(Image.open(item["label"]))
    assert small.shape == (8, 16) and np.array_equal(small, src[1::2, 1::2])  # nearest: 4x4 blocks kept exactly
    d = get_eval_transforms_2d(with_blackbox=True)(item)
    assert torch.equal(d[CarKeys.LABEL], d[BLACKBOX_KEY])  # the "black box" predicted the label
    # a second build keeps the copies (same size) and writes the same datalist
    mtime = Path(item["image"]).stat().st_mtime_ns
    build_cityscapes_datalist(root, out, resolution=(8, 16), blackbox_dir=bb, write_resized=True)
    assert Path(item["image"]).stat().st_mtime_ns == mtime and json.loads(path.read_text()) == raw


def test_predictions_at_the_target_resolution_are_accepted(tmp_path):
    root, bb = tmp_path / "cityscapes", tmp_path / "pred"
    _write_official(root, blackbox=bb, bb_size=(8, 16))
    path = build_cityscapes_datalist(root, tmp_path / "out", resolution=(8, 16), blackbox_dir=bb)
    item = load_segmentation_datalist(path, "validation", require_blackbox=True)[0]
    d = get_eval_transforms_2d(with_blackbox=True, spatial_size=(8, 16))(item)
    assert d[BLACKBOX_KEY].shape == d[CarKeys.LABEL].shape == (1, 8, 16)
    with pytest.raises(ValueError, match=r"pred/.*\(8, 16\) \(H, W\).*\(16, 32\)"):
        build_cityscapes_datalist(root, tmp_path / "out2", resolution=(4, 8), blackbox_dir=bb)


def test_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="leftImg8bit/ and gtFine/"):
        find_cityscapes_cases(tmp_path / "nowhere", "train")
    root = tmp_path / "cs"
    _write_official(root)
    with pytest.raises(FileNotFoundError, match="unpack the official leftImg8bit_trainvaltest.zip"):
        find_cityscapes_cases(root, "test")
    stem = _stem("bremen", 0)
    (root / "gtFine/train/bremen" / f"{stem}_gtFine_labelTrainIds.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"{stem}_leftImg8bit.png has no label map.*csCreateTrainIdLabelImgs"):
        find_cityscapes_cases(root, "train", label_format="train_ids")
    Image.fromarray(np.zeros((H, W + 2), np.uint8)).save(root / "gtFine/train/bremen" / f"{stem}_gtFine_labelIds.png")
    with pytest.raises(ValueError, match=f"label map .*{stem}_gtFine_labelIds.png is \\(16, 34\\)"):
        find_cityscapes_cases(root, "train")
    root2 = tmp_path / "cs2"
    _write_official(root2, blackbox=tmp_path / "bb")
    (tmp_path / "bb/ulm" / f"{_stem('ulm', 1)}.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"{_stem('ulm', 1)}_leftImg8bit.png has no black-box prediction"):
        find_cityscapes_cases(root2, "train", blackbox_dir=tmp_path / "bb")
    np.save(tmp_path / "bb" / f"{_stem('aachen', 0)}.npy", np.zeros((25, H, W), np.float32))
    with pytest.raises(ValueError, match="two black-box predictions"):
        find_cityscapes_cases(root2, "train", blackbox_dir=tmp_path / "bb")
    with pytest.raises(ValueError, match="aspect ratio"):
        build_cityscapes_datalist(root2, tmp_path / "o", resolution=(8, 8))
    with pytest.raises(ValueError, match="blackbox_format"):
        build_cityscapes_datalist(root2, tmp_path / "o", blackbox_format="logits")


def test_command_line(tmp_path, capsys):
    _write_official(tmp_path / "cs")
    path = main([str(tmp_path / "cs"), str(tmp_path / "out"), "--resolution", "8", "16", "--write-resized"])
    assert path == tmp_path / "out" / "datalist.json" and str(path) in capsys.readouterr().out
    assert len(load_segmentation_datalist(path, "training")) == 3
