"""The generated street scenes: a known distribution's raw material (original classes only), an imperfect black box,
a loadable datalist, and a cache that is built once and never left half-written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from monai_car.data import load_segmentation_datalist
from monai_car.data.synthetic_scenes import SCENE_CLASSES, build_synthetic_scenes, ensure_synthetic_scenes, render_scene
from monai_car.utils.cityscapes_classes import COPY_IDS, SWITCHABLE_TRAIN_IDS, VOID


def _scenes(n: int = 30, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [render_scene(rng, (64, 128)) for _ in range(n)]


def test_scenes_hold_the_original_classes_and_every_switchable_class_occurs():
    scenes = _scenes()
    labels = np.stack([s["label"] for s in scenes])
    assert set(np.unique(labels)) <= set(SCENE_CLASSES.values()) | {VOID}
    assert not np.isin(labels, COPY_IDS).any()  # the copies are drawn on the fly, never stored
    for cls in SWITCHABLE_TRAIN_IDS:
        assert (labels == cls).any(), f"class {cls} never drawn in 30 scenes"
    assert (labels[:, -1] == VOID).all()  # the ego-vehicle strip
    image = scenes[0]["image"]
    assert image.shape == (64, 128, 3) and image.dtype == np.uint8


def test_the_black_box_is_deterministic_imperfect_and_predicts_original_classes_only():
    scenes = _scenes()
    bb = np.stack([s["blackbox"] for s in scenes])
    labels = np.stack([s["label"] for s in scenes])
    assert not np.isin(bb, COPY_IDS + (VOID,)).any()
    valid = labels != VOID
    accuracy = (bb == labels)[valid].mean()
    assert 0.9 < accuracy < 1.0  # mostly right, not the label itself
    assert not (bb == 5).any()  # poles (and signs) predicted as building
    again = _scenes()
    for a, b in zip(scenes, again):  # one seed gives the same scenes, images and predictions
        for key in ("image", "label", "blackbox"):
            assert np.array_equal(a[key], b[key])
    assert not np.array_equal(scenes[0]["image"], _scenes(1, seed=1)[0]["image"])


def test_render_scene_checks_its_inputs():
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        render_scene(0)
    with pytest.raises(ValueError, match="at least"):
        render_scene(np.random.default_rng(0), (16, 64))


def test_build_writes_a_datalist_the_2d_reader_loads(tmp_path):
    root = build_synthetic_scenes(tmp_path / "scenes", 3, 2, 2, size=(32, 64), seed=1)
    content = json.loads((root / "datalist.json").read_text())
    assert content["label_format"] == "classes" and content["labels_are_unflipped"] is True
    assert content["resolution"] == [32, 64]
    test = load_segmentation_datalist(root / "datalist.json", "test", require_blackbox=True)
    assert [c["case_id"] for c in test] == ["test_0000", "test_0001"]
    label = np.asarray(Image.open(test[0]["label"]))
    assert label.shape == (32, 64) and label.dtype == np.uint8
    assert content["training"][0]["image"] == "images/training_0000.png"  # relative: the folder can move


def test_the_cache_is_built_once_and_a_failed_build_leaves_nothing(tmp_path, monkeypatch):
    first = ensure_synthetic_scenes(tmp_path, 2, 1, 1, size=(32, 64))
    stamp = (first / "datalist.json").stat().st_mtime_ns
    assert ensure_synthetic_scenes(tmp_path, 2, 1, 1, size=(32, 64)) == first
    assert (first / "datalist.json").stat().st_mtime_ns == stamp
    assert first.name.startswith("synthetic_scenes_v1-")  # not the default parameters: a folder of its own

    import monai_car.data.synthetic_scenes as module

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(module, "render_scene", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_synthetic_scenes(tmp_path, 3, 1, 1, size=(32, 64))
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no half-written folder beside it
    with pytest.raises(ValueError, match="num_training"):
        ensure_synthetic_scenes(tmp_path, 0)
