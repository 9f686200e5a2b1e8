from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers import labels as cs_labels
from PIL import Image

from monai_car.transforms import (
    BLACKBOX_KEY,
    FLIP_MODE_KEY,
    get_eval_transforms_2d,
    get_load_transforms_2d,
    get_train_transforms_2d,
)
from monai_car.utils import CarKeys
from monai_car.utils.cityscapes_classes import COPY_IDS, NUM_CLASSES, SWITCHABLE_TRAIN_IDS, VOID

# labelIds of road, sidewalk, building, vegetation, person, car, and unlabeled (void)
LABEL_IDS = np.array([7, 8, 11, 21, 24, 26, 0], dtype=np.uint8)


def _train_ids(label_ids: np.ndarray) -> np.ndarray:
    """labelIds -> trainIds (255 for ignored) with cityscapesscripts' dictionary, pixel by pixel."""
    return np.vectorize(lambda i: cs_labels.id2label[int(i)].trainId % 256)(label_ids).astype(np.uint8)


def _case(root: Path, name: str = "c0", shape=(24, 48), seed: int = 0, npy: bool = False) -> dict:
    """A case whose image encodes its label (red = labelId * 7) and whose black box predicts the label exactly
    (as trainIds PNG, or as one-hot .npy channels over the 25 classes)."""
    rng = np.random.default_rng(seed)
    ids = LABEL_IDS[rng.integers(0, len(LABEL_IDS), size=(shape[0] // 4, shape[1] // 4))]
    label_ids = np.kron(ids, np.ones((4, 4), dtype=np.uint8))
    rgb = np.stack(
        [label_ids * 7, np.full(shape, 50, np.uint8), np.tile(np.arange(shape[1], dtype=np.uint8), (shape[0], 1))], -1
    )
    Image.fromarray(rgb.astype(np.uint8)).save(root / f"{name}_image.png")
    Image.fromarray(label_ids).save(root / f"{name}_label.png")
    train = _train_ids(label_ids)
    if npy:
        classes = np.where(train == 255, VOID, train)
        np.save(root / f"{name}_bb.npy", np.eye(NUM_CLASSES, dtype=np.float32)[classes].transpose(2, 0, 1))
        bb = root / f"{name}_bb.npy"
    else:
        Image.fromarray(train).save(root / f"{name}_bb.png")
        bb = root / f"{name}_bb.png"
    return {
        CarKeys.IMAGE: str(root / f"{name}_image.png"),
        CarKeys.LABEL: str(root / f"{name}_label.png"),
        BLACKBOX_KEY: str(bb),
        CarKeys.CASE_ID: name,
    }


def test_load_maps_classes_and_reads_rows_first(tmp_path):
    case = _case(tmp_path)
    out = get_load_transforms_2d(with_blackbox=True)
    d = case
    for t in out:
        d = t(d)
    assert d[CarKeys.IMAGE].shape == (3, 24, 48) and d[CarKeys.IMAGE].dtype == torch.float32
    assert float(d[CarKeys.IMAGE].max()) <= 1.0
    label_ids = np.asarray(Image.open(case[CarKeys.LABEL]))
    expected = _train_ids(label_ids)
    expected[expected == 255] = VOID
    assert np.array_equal(d[CarKeys.LABEL][0].numpy(), expected)
    assert torch.equal(d[CarKeys.LABEL], d[BLACKBOX_KEY])
    # the image's blue channel is the column index: width is the last axis
    assert torch.allclose(d[CarKeys.IMAGE][2, 0] * 255, torch.arange(48, dtype=torch.float32))


def test_train_chain_keeps_label_prediction_and_image_together(tmp_path):
    case = _case(tmp_path)
    chain = get_train_transforms_2d(
        with_blackbox=True, spatial_size=(16, 32), crop_size=(12, 24), scale_range=(0.8, 1.3), seed=0
    )
    modes = set()
    for _ in range(12):
        out = chain(dict(case))
        img, lab, bb = out[CarKeys.IMAGE], out[CarKeys.LABEL], out[BLACKBOX_KEY]
        assert img.shape == (3, 12, 24) and lab.shape == bb.shape == (1, 12, 24) and lab.dtype == torch.uint8
        mode = out[FLIP_MODE_KEY]
        modes.add(tuple(mode.tolist()))
        assert torch.equal(lab, bb)  # the black box predicted the label exactly: same resize, crop, flip, class flips
        assert torch.equal(out[CarKeys.GRADER_LABEL], lab)
        for i, (original, copy) in enumerate(zip(SWITCHABLE_TRAIN_IDS, COPY_IDS)):
            assert not (lab == (original if mode[i] else copy)).any()
        assert int(lab.max()) <= VOID
    assert len(modes) > 3


def test_one_hot_and_probability_predictions(tmp_path):
    case = _case(tmp_path, npy=True)
    out = get_train_transforms_2d(with_blackbox=True, blackbox_format="probabilities", seed=1)(case)
    bb, lab = out[BLACKBOX_KEY], out[CarKeys.LABEL]
    assert bb.shape == (NUM_CLASSES, 24, 48) and bb.dtype == torch.float32
    assert torch.equal(bb.argmax(0), lab[0].long())
    png = _case(tmp_path, "c1")
    out = get_train_transforms_2d(with_blackbox=True, blackbox_one_hot=True, seed=1)(png)
    assert out[BLACKBOX_KEY].shape == (NUM_CLASSES, 24, 48)
    assert torch.equal(out[BLACKBOX_KEY].argmax(0), out[CarKeys.LABEL][0].long())
    assert torch.allclose(out[BLACKBOX_KEY].sum(0), torch.ones(24, 48))


def test_eval_chain_is_deterministic_and_keeps_original_classes(tmp_path):
    case = _case(tmp_path)
    chain = get_eval_transforms_2d(with_blackbox=True, spatial_size=(12, 24))
    a, b = chain(dict(case)), chain(dict(case))
    assert torch.equal(a[CarKeys.LABEL], b[CarKeys.LABEL]) and FLIP_MODE_KEY not in a
    assert not torch.isin(a[CarKeys.LABEL], torch.tensor(COPY_IDS, dtype=torch.uint8)).any()
    flipped = get_eval_transforms_2d(with_blackbox=True, class_flips=True, seed=3)
    assert torch.equal(
        flipped(dict(case))[FLIP_MODE_KEY],
        get_eval_transforms_2d(with_blackbox=True, class_flips=True, seed=3)(dict(case))[FLIP_MODE_KEY],
    )
    image_only = get_eval_transforms_2d(with_label=False)({CarKeys.IMAGE: case[CarKeys.IMAGE]})
    assert set(image_only) == {CarKeys.IMAGE}


def _raises_cause(chain, data, match: str) -> None:
    """``chain(data)`` fails with a ValueError matching ``match`` (Compose wraps it in a RuntimeError)."""
    with pytest.raises(RuntimeError) as info:
        chain(data)
    cause = info.value.__cause__
    assert isinstance(cause, ValueError), cause
    assert re.search(match, str(cause)), str(cause)


def test_errors_name_the_file(tmp_path):
    case = _case(tmp_path)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    small = str(tmp_path / "small.png")
    _raises_cause(get_eval_transforms_2d(), {**case, CarKeys.LABEL: small}, r"label .*small.png.*image")
    _raises_cause(
        get_eval_transforms_2d(with_blackbox=True), {**case, BLACKBOX_KEY: small}, "black-box prediction .*small.png"
    )
    Image.fromarray(np.zeros((24, 48, 4), np.uint8)).save(tmp_path / "rgba.png")
    _raises_cause(get_eval_transforms_2d(), {**case, CarKeys.IMAGE: str(tmp_path / "rgba.png")}, "rgba.png.*no alpha")
    with pytest.raises(ValueError, match="label_format"):
        get_train_transforms_2d(label_format="ids")
    with pytest.raises(ValueError, match="flip_layout"):
        get_train_transforms_2d(flip_layout={"probs": (0.5,)})


def test_concatenated_black_box_and_a_label_only_flip(tmp_path):
    from monai_car.metrics import unflip_label

    case = _case(tmp_path)
    chain = get_train_transforms_2d(
        with_blackbox=True, blackbox_one_hot=True, concat_blackbox=True, flip_blackbox=False
    )
    flipped = 0
    for seed in range(10):
        chain.set_random_state(seed=seed)
        out = chain(dict(case))
        image, label, bb = out[CarKeys.IMAGE], out[CarKeys.LABEL], out[BLACKBOX_KEY]
        assert image.shape == (3 + NUM_CLASSES, 24, 48)
        assert torch.equal(image[3:], bb)  # F's input: the image channels, then the prediction's one-hot
        assert bb[list(COPY_IDS)].sum() == 0  # the black box is never flipped
        flipped += int(torch.isin(label, torch.tensor(COPY_IDS, dtype=label.dtype)).any())
        assert torch.equal(unflip_label(label[None])[0, 0], bb.argmax(0))  # unflipped, the label is the prediction
    assert flipped > 0
    with pytest.raises(ValueError, match="concat_blackbox"):
        get_eval_transforms_2d(concat_blackbox=True)


def test_inference_chain_ignores_a_label_path_it_does_not_load(tmp_path):
    chain = get_eval_transforms_2d(with_label=False, with_blackbox=True, blackbox_one_hot=True, concat_blackbox=True)
    out = chain(_case(tmp_path))
    assert out[CarKeys.IMAGE].shape == (3 + NUM_CLASSES, 24, 48) and isinstance(out[CarKeys.LABEL], str)
