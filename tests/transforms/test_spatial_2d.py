from __future__ import annotations

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers import labels as cs_labels
from monai.data import MetaTensor

from monai_car.transforms import MapLabelIdsd, RandFlipScaleCropd, label_lookup_table
from monai_car.utils.cityscapes_classes import VOID


def _blocks(shape=(32, 48), block=8, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose channel 0 is a random class id per 8x8 block (channel 1 a ramp), and its label map."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 24, size=(shape[0] // block, shape[1] // block))
    label = np.kron(ids, np.ones((block, block), dtype=np.int64)).astype(np.uint8)[None]
    ramp = np.broadcast_to(np.linspace(0, 1, shape[1], dtype=np.float32), shape)
    image = np.stack([label[0].astype(np.float32), ramp])
    return torch.from_numpy(image.copy()), torch.from_numpy(label)


def test_map_label_ids_matches_cityscapesscripts_per_pixel():
    ids = np.array([label.id for label in cs_labels.labels if label.id >= 0], dtype=np.uint8)
    label = MetaTensor(torch.from_numpy(np.resize(ids, (1, 5, 7))))
    out = MapLabelIdsd("label", "label_ids")({"label": label})["label"]
    assert isinstance(out, MetaTensor) and out.dtype == torch.uint8
    expected = [
        cs_labels.id2label[int(i)].trainId if cs_labels.id2label[int(i)].trainId not in (255, -1) else VOID
        for i in label.flatten()
    ]
    assert out.flatten().tolist() == expected


def test_map_train_ids_and_classes():
    label = torch.tensor([[[0, 18, 255, 7]]], dtype=torch.uint8)
    assert MapLabelIdsd("l", "train_ids")({"l": label})["l"].tolist() == [[[0, 18, VOID, 7]]]
    classes = torch.tensor([[[0, 23, 24]]])
    assert MapLabelIdsd("l", "classes")({"l": classes})["l"].tolist() == [[[0, 23, 24]]]
    with pytest.raises(ValueError, match="label_format"):
        MapLabelIdsd("l", "classes")({"l": torch.tensor([[[25]]]), "case_id": "c"})
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        MapLabelIdsd("l")({"l": torch.zeros(2, 3, 3, dtype=torch.uint8)})
    with pytest.raises(ValueError, match="label_format must be one of"):
        MapLabelIdsd("l", "nonsense")
    custom = MapLabelIdsd("l", [2, 1, 0])({"l": torch.tensor([[[0, 1, 2]]])})["l"]
    assert custom.tolist() == [[[2, 1, 0]]]
    assert label_lookup_table("classes").tolist() == list(range(25))


def test_flip_only_equals_torch_flip_and_is_drawn_both_ways():
    image, label = _blocks()
    flipped = 0
    for seed in range(20):
        t = RandFlipScaleCropd(["image", "label"], label_keys=["label"], flip_prob=0.5)
        t.set_random_state(seed=seed)
        out = t({"image": image, "label": label})
        if torch.equal(out["image"], image):
            assert torch.equal(out["label"], label)
        else:
            assert torch.equal(out["image"], torch.flip(image, dims=[2]))
            assert torch.equal(out["label"], torch.flip(label, dims=[2]))
            flipped += 1
    assert 3 < flipped < 17


def test_crop_only_same_window_on_all_keys():
    image, label = _blocks()
    corners = set()
    for seed in range(10):
        t = RandFlipScaleCropd(["image", "label"], label_keys="label", flip_prob=0.0, crop_size=(16, 24))
        t.set_random_state(seed=seed)
        out = t({"image": image, "label": label})
        ramp = out["image"][1]
        x0 = int(round(float(ramp[0, 0]) * 47))  # the ramp's value gives the crop's column
        matches = [y0 for y0 in range(32 - 16 + 1) if torch.equal(out["image"], image[:, y0 : y0 + 16, x0 : x0 + 24])]
        assert matches, seed
        assert any(torch.equal(out["label"], label[:, y0 : y0 + 16, x0 : x0 + 24]) for y0 in matches)
        corners.add((matches[0], x0))
    assert len(corners) > 3


def test_label_stays_aligned_after_flip_scale_crop():
    image, label = _blocks()
    scales = set()
    for seed in range(12):
        t = RandFlipScaleCropd(
            ["image", "label"], label_keys=["label"], flip_prob=0.5, scale_range=(0.6, 1.6), crop_size=(24, 40)
        )
        t.set_random_state(seed=seed)
        out = t({"image": MetaTensor(image), "label": MetaTensor(label)})
        img, lab = out["image"], out["label"]
        assert img.shape == (2, 24, 40) and lab.shape == (1, 24, 40) and lab.dtype == torch.uint8
        scales.add(round(t._scale, 3))
        # inside a block (the image constant over a 3x3 neighbourhood) the bilinear image is the block's id; there
        # the label must be that id (an edge pixel can be an integer too: the mean of 4 and 12)
        values = img[0]
        pooled = values[None, None]
        spread = torch.nn.functional.max_pool2d(pooled, 3, 1, 1) + torch.nn.functional.max_pool2d(-pooled, 3, 1, 1)
        interior = (spread[0, 0] < 1e-4) & ((values - values.round()).abs() < 1e-4)
        padded = lab[0] == VOID
        check = interior & ~padded  # image padding is 0, label padding void
        assert check.sum() > 60, seed  # enough block interiors to test
        assert torch.equal(lab[0][check].long(), values[check].round().long()), seed
        # the ramp of channel 1 rises left to right, and falls when flipped
        ramp = img[1][~padded]
        assert ramp.numel() > 0
        rising = bool((img[1][12, 1:] - img[1][12, :-1])[~padded[12, 1:] & ~padded[12, :-1]].mean() > 0)
        assert rising != t._flip
    assert len(scales) > 5


def test_padding_is_void_for_labels_and_zero_for_images():
    image, label = _blocks((16, 16))
    t = RandFlipScaleCropd(["image", "label"], label_keys=["label"], scale_range=(0.5, 0.5), crop_size=(16, 16))
    t.set_random_state(seed=0)
    out = t({"image": image + 1.0, "label": label})
    pad = out["label"][0] == VOID
    assert pad.sum() == 16 * 16 - 8 * 8
    assert (out["image"][:, pad] == 0).all() and (out["image"][:, ~pad] > 0).all()


def test_reproducible_and_validated():
    image, label = _blocks()

    def run(seed):
        t = RandFlipScaleCropd(["image", "label"], ["label"], scale_range=(0.8, 1.2), crop_size=20)
        t.set_random_state(seed=seed)
        return [t({"image": image, "label": label})["label"] for _ in range(3)]

    assert all(torch.equal(a, b) for a, b in zip(run(5), run(5)))
    with pytest.raises(ValueError, match="different spatial shapes"):
        RandFlipScaleCropd(["image", "label"], ["label"])({"image": image, "label": label[:, :16], "case_id": "c"})
    with pytest.raises(ValueError, match="not among keys"):
        RandFlipScaleCropd(["image"], ["label"])
    with pytest.raises(ValueError, match="scale_range"):
        RandFlipScaleCropd(["image"], scale_range=(1.2, 0.8))
    with pytest.raises(ValueError, match="crop_size"):
        RandFlipScaleCropd(["image"], crop_size=(0, 4))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        RandFlipScaleCropd(["image"])({"image": image[0]})


def test_each_label_pixel_is_the_source_pixel_under_the_image_coordinate():
    # the image's two channels are the row and column index; bilinear resampling gives each output pixel its source
    # coordinate, so the label there must be the source label at the rounded coordinate (torch's plain "nearest" is
    # off by one at many pixels; a label cropped or flipped differently from the image too)
    rng = np.random.default_rng(1)
    h, w = 20, 30
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    image = torch.from_numpy(np.stack([rows, cols]))
    label = torch.from_numpy(rng.integers(0, 24, size=(1, h, w)).astype(np.uint8))
    for seed in range(8):
        t = RandFlipScaleCropd(["image", "label"], ["label"], scale_range=(0.7, 1.8), crop_size=(18, 26))
        t.set_random_state(seed=seed)
        out = t({"image": image, "label": label})
        r, c, lab = out["image"][0], out["image"][1], out["label"][0]
        valid = lab != VOID
        for coord in (r, c):  # leave out ties: a coordinate half-way between two source pixels
            valid &= ((coord - coord.floor()) - 0.5).abs() > 1e-3
        assert valid.sum() > 100
        ri, ci = r.round().long()[valid], c.round().long()[valid]
        assert torch.equal(lab[valid], label[0][ri, ci]), seed
