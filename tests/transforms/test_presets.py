from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor

from monai_car.transforms import GraderCountError, get_eval_transforms, get_load_transforms, get_train_transforms
from monai_car.utils import CarKeys

THRESHOLDS = (0.2, 0.4, 0.6, 0.8)


def _write_case(root: Path, name: str, shape=(20, 20), num_graders: int = 4) -> dict:
    """An asymmetric image whose grader r marks ``image > THRESHOLDS[r]``: masks are a function of the image."""
    grid = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    image = (0.7 * grid[0] ** 2 + 0.3 * grid[1]).astype(np.float32)  # not symmetric along either axis
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    affine[:3, 3] = (-10.0, 5.0, -40.0)
    nib.save(nib.Nifti1Image(image, affine), root / f"{name}.nii.gz")
    labels = []
    for r in range(num_graders):
        nib.save(nib.Nifti1Image((image > THRESHOLDS[r]).astype(np.uint8), affine), root / f"{name}_g{r}.nii.gz")
        labels.append(str(root / f"{name}_g{r}.nii.gz"))
    return {CarKeys.IMAGE: str(root / f"{name}.nii.gz"), CarKeys.LABELS: labels, CarKeys.CASE_ID: name}


def _masks_follow_image(out: dict) -> bool:
    img, lab = out[CarKeys.IMAGE][0], out[CarKeys.LABEL]
    return all(torch.equal(lab[r].bool(), img > t) for r, t in enumerate(THRESHOLDS))


def test_train_transforms_output_contract(tmp_path):
    case = _write_case(tmp_path, "big", shape=(30, 26))
    out = get_train_transforms(crop_size=16, seed=0)(case)
    img, lab, grader = out[CarKeys.IMAGE], out[CarKeys.LABEL], out[CarKeys.GRADER_LABEL]
    assert isinstance(img, MetaTensor) and img.shape == (1, 16, 16) and img.dtype == torch.float32
    assert isinstance(lab, MetaTensor) and lab.shape == (4, 16, 16) and lab.dtype == torch.uint8
    assert grader.shape == (1, 16, 16) and grader.dtype == torch.uint8
    assert any(torch.equal(grader[0], lab[r]) for r in range(4))
    assert out[CarKeys.CASE_ID] == "big"
    assert torch.allclose(img.affine, lab.affine)


def test_centre_crop_and_pad(tmp_path):
    case = _write_case(tmp_path, "c", shape=(30, 26))
    full = get_eval_transforms(crop_size=None)(case)[CarKeys.IMAGE]
    crop = get_eval_transforms(crop_size=16)(case)[CarKeys.IMAGE]
    assert torch.equal(crop[0], full[0, 7:23, 5:21])  # central 16 x 16 of 30 x 26
    padded = get_eval_transforms(crop_size=(34, 30))(case)
    assert padded[CarKeys.IMAGE].shape == (1, 34, 30) and padded[CarKeys.LABEL].shape == (4, 34, 30)
    assert torch.equal(padded[CarKeys.IMAGE][0, 2:32, 2:28], full[0]) and padded[CarKeys.IMAGE][0, :2].sum() == 0
    # the crop's affine moves the origin to the crop's first voxel
    assert torch.allclose(crop.affine[:3, 3], full.affine[:3, 3] + torch.tensor([7 * 0.8, 5 * 0.8, 0.0]).double())


def test_flip_hits_image_and_all_graders_identically(tmp_path):
    case = _write_case(tmp_path, "f")
    unflipped = get_train_transforms(crop_size=None, flip_prob=0.0)(case)
    chain = get_train_transforms(crop_size=None, flip_prob=0.5, seed=3)
    flips = 0
    for _ in range(24):
        out = chain(case)
        assert _masks_follow_image(out)  # fails if the image is flipped without the masks, or the reverse
        flipped = torch.equal(out[CarKeys.IMAGE], torch.flip(unflipped[CarKeys.IMAGE], dims=[1]))
        assert flipped or torch.equal(out[CarKeys.IMAGE], unflipped[CarKeys.IMAGE])
        if flipped:
            assert torch.equal(out[CarKeys.LABEL], torch.flip(unflipped[CarKeys.LABEL], dims=[1]))
            assert any(torch.equal(out[CarKeys.GRADER_LABEL][0], out[CarKeys.LABEL][r]) for r in range(4))
        flips += flipped
    assert 4 <= flips <= 20  # both outcomes occur
    always = get_train_transforms(crop_size=None, flip_prob=1.0)(case)
    assert torch.equal(always[CarKeys.LABEL], torch.flip(unflipped[CarKeys.LABEL], dims=[1]))


def test_seeded_chains_reproduce(tmp_path):
    case = _write_case(tmp_path, "s")
    reference = get_train_transforms(crop_size=None, flip_prob=0.0)(case)[CarKeys.IMAGE]

    def run(seed: int) -> list[tuple[bool, int]]:
        chain = get_train_transforms(crop_size=None, seed=seed)
        outs = [chain(case) for _ in range(12)]
        return [(torch.equal(o[CarKeys.IMAGE], reference), int(o[CarKeys.GRADER_LABEL].sum())) for o in outs]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_eval_transforms_without_labels_and_3d(tmp_path):
    case = _write_case(tmp_path, "e")
    out = get_eval_transforms(crop_size=16, with_labels=False)(
        {CarKeys.IMAGE: case[CarKeys.IMAGE], CarKeys.CASE_ID: "e"}
    )
    assert out[CarKeys.IMAGE].shape == (1, 16, 16) and CarKeys.LABEL not in out
    vol = _write_case(tmp_path, "v", shape=(12, 10, 6))
    out3 = get_train_transforms(spatial_dims=3, crop_size=(8, 8, 4), seed=0)(vol)
    assert out3[CarKeys.IMAGE].shape == (1, 8, 8, 4) and out3[CarKeys.LABEL].shape == (4, 8, 8, 4)
    assert _masks_follow_image(out3)
    with pytest.raises(RuntimeError, match="ValidateCased"):
        get_train_transforms(spatial_dims=3)(case)  # a 2D case through a 3D chain


def test_batches_collate(tmp_path):
    data = [_write_case(tmp_path, f"b{i}", shape=(18 + i, 20)) for i in range(4)]
    loader = DataLoader(Dataset(data, get_train_transforms(crop_size=16, seed=0)), batch_size=2, num_workers=0)
    batch = next(iter(loader))
    assert batch[CarKeys.IMAGE].shape == (2, 1, 16, 16) and batch[CarKeys.LABEL].shape == (2, 4, 16, 16)
    assert batch[CarKeys.GRADER_LABEL].shape == (2, 1, 16, 16) and list(batch[CarKeys.CASE_ID]) == ["b0", "b1"]


def test_skip_mode_marks_bad_cases_and_the_batch_still_collates(tmp_path):
    good = _write_case(tmp_path, "good", shape=(18, 20))
    nan = _write_case(tmp_path, "nan", shape=(18, 20))
    img = nib.load(nan[CarKeys.IMAGE])
    data = np.asarray(img.dataobj).copy()
    data[3, 4] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), nan[CarKeys.IMAGE])
    three = _write_case(tmp_path, "three", shape=(20, 20), num_graders=2)  # 2 graders, pad_mode="error" below
    chain = get_train_transforms(crop_size=16, seed=0, pad_mode="error", on_error="skip")
    loader = DataLoader(Dataset([good, nan, three], chain), batch_size=3, num_workers=0)
    batch = next(iter(loader))
    assert batch[CarKeys.IMAGE].shape == (3, 1, 16, 16) and batch[CarKeys.LABEL].shape == (3, 4, 16, 16)
    reasons = list(batch["skip_reason"])
    assert reasons[0] == ""
    assert reasons[1].startswith("case nan: image holds 1 NaN")
    assert reasons[2].startswith("case three has 2 grader masks but num_graders=4")
    with pytest.raises(RuntimeError):
        get_train_transforms(crop_size=16, pad_mode="error")(three)


def test_load_transforms_pad_graders_and_bad_arguments(tmp_path):
    case = _write_case(tmp_path, "p", num_graders=3)
    from monai.transforms import Compose

    # the default: an error naming the case and the counts, never a silent empty grader
    for chain in (
        Compose(get_load_transforms()),
        get_train_transforms(crop_size=16),
        get_eval_transforms(crop_size=16),
    ):
        with pytest.raises(RuntimeError) as info:  # Compose wraps the transform's error
            chain(case)
        assert isinstance(info.value.__cause__, GraderCountError) and "case p has 3" in str(info.value.__cause__)
    out = Compose(get_load_transforms(num_graders=4, pad_mode="empty"))(case)  # padding is opt-in
    assert out[CarKeys.LABEL].shape == (4, 20, 20) and out[CarKeys.LABEL][3].sum() == 0
    for chain in (get_train_transforms, get_eval_transforms):  # so is truncation, named as the error advises
        out = chain(crop_size=16, num_graders=2, truncate_mode="first")(case)
        assert out[CarKeys.LABEL].shape == (2, 16, 16)
    with pytest.raises(ValueError, match="spatial_dims"):
        get_train_transforms(spatial_dims=1)
    with pytest.raises(ValueError, match="crop_size"):
        get_train_transforms(crop_size=(16, 16, 16))
    with pytest.raises(ValueError, match="flip_prob"):
        get_train_transforms(flip_prob=2.0)
    with pytest.raises(ValueError, match="flip_axis"):
        get_train_transforms(flip_axis=2)


def test_images_in_hounsfield_units_are_refused(tmp_path):
    case = _write_case(tmp_path, "hu")
    img = nib.load(case[CarKeys.IMAGE])
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 1400.0 - 1000.0, img.affine), case[CarKeys.IMAGE])
    for chain in (get_train_transforms(crop_size=16), get_eval_transforms(crop_size=16)):
        with pytest.raises(RuntimeError) as info:
            chain(case)
        message = str(info.value.__cause__)
        assert message.startswith("case hu: image ") and "hu.nii.gz values span [-1000, 400], outside [0, 1]" in message
        assert "HU window [-1000, 400]" in message
