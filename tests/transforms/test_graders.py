from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage

from monai_car.transforms import SKIP_REASON_KEY, GraderCountError, LoadGradersd, RandGraderd
from monai_car.utils import CarKeys

AFFINE = np.array([[0.7, 0.0, 0.0, -30.0], [0.0, 0.7, 0.0, 12.0], [0.0, 0.0, 2.5, -100.0], [0.0, 0.0, 0.0, 1.0]])


def _masks(root: Path, n: int, shape=(10, 12), affine=AFFINE, dtype=np.uint8, seed=0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for r in range(n):
        p = root / f"g{r}.nii.gz"
        nib.save(nib.Nifti1Image((rng.random(shape) > 0.5).astype(dtype), affine), p)
        paths.append(str(p))
    return paths


def _image(root: Path, shape=(10, 12), affine=AFFINE) -> MetaTensor:
    p = root / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(1).random(shape, dtype=np.float32), affine), p)
    return LoadImage(image_only=True, ensure_channel_first=True)(str(p))


def test_stacks_graders_with_meta_and_dtype(tmp_path):
    paths = _masks(tmp_path, 4)
    out = LoadGradersd()({CarKeys.LABELS: paths, CarKeys.IMAGE: _image(tmp_path), CarKeys.CASE_ID: "c"})
    label = out[CarKeys.LABEL]
    assert isinstance(label, MetaTensor) and label.dtype == torch.uint8 and label.shape == (4, 10, 12)
    assert np.allclose(label.affine.numpy(), AFFINE)
    assert label.meta["filename_or_obj"] == paths[0]
    assert CarKeys.LABELS not in out  # the paths are replaced by the loaded masks, as LoadImaged does
    assert LoadGradersd(keep_paths=True)({CarKeys.LABELS: paths})[CarKeys.LABELS] == paths
    for r, p in enumerate(paths):
        assert np.array_equal(label[r].numpy(), np.asarray(nib.load(p).dataobj))


def test_accepts_float_and_bool_like_binary_masks_without_image(tmp_path):
    out = LoadGradersd()({CarKeys.LABELS: _masks(tmp_path, 2, dtype=np.float32)})
    assert out[CarKeys.LABEL].dtype == torch.uint8 and set(out[CarKeys.LABEL].unique().tolist()) <= {0, 1}


def test_grader_shapes_must_agree(tmp_path):
    paths = _masks(tmp_path, 2)
    (tmp_path / "odd").mkdir()
    paths += _masks(tmp_path / "odd", 1, shape=(10, 11))
    with pytest.raises(ValueError, match=r"case c: grader 2 mask .*odd/g0\.nii\.gz has shape \(10, 11\)"):
        LoadGradersd()({CarKeys.LABELS: paths, CarKeys.CASE_ID: "c"})


def test_masks_must_match_image_shape_and_affine(tmp_path):
    paths = _masks(tmp_path, 2)
    with pytest.raises(ValueError, match=r"case c: the grader masks .* have shape \(10, 12\) but the image"):
        LoadGradersd()({CarKeys.LABELS: paths, CarKeys.IMAGE: torch.zeros(1, 10, 13), CarKeys.CASE_ID: "c"})
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    (tmp_path / "img").mkdir()
    with pytest.raises(ValueError, match="different affines"):
        LoadGradersd()(
            {CarKeys.LABELS: paths, CarKeys.IMAGE: _image(tmp_path / "img", affine=shifted), CarKeys.CASE_ID: "c"}
        )


def test_non_binary_and_missing_masks_are_errors(tmp_path):
    p = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4), 255, np.uint8), AFFINE), p)
    with pytest.raises(ValueError, match=r"case c: grader 0 mask .*bad\.nii\.gz is not binary \(values such as \[255"):
        LoadGradersd()({CarKeys.LABELS: [str(p)], CarKeys.CASE_ID: "c"})
    with pytest.raises(ValueError, match=r"grader 1 mask .*missing\.nii\.gz does not exist"):
        LoadGradersd()({CarKeys.LABELS: _masks(tmp_path, 1) + [str(tmp_path / "missing.nii.gz")], CarKeys.CASE_ID: "c"})
    with pytest.raises(ValueError, match="non-empty list"):
        LoadGradersd()({CarKeys.LABELS: [], CarKeys.CASE_ID: "c"})


def test_pad_and_truncate_policies(tmp_path):
    paths = _masks(tmp_path, 3)
    base = LoadGradersd()({CarKeys.LABELS: paths})[CarKeys.LABEL]
    empty = LoadGradersd(num_graders=5, pad_mode="empty")({CarKeys.LABELS: paths})[CarKeys.LABEL]
    assert empty.shape == (5, 10, 12) and torch.equal(empty[:3], base) and empty[3:].sum() == 0
    assert isinstance(empty, MetaTensor) and np.allclose(empty.affine.numpy(), AFFINE)
    rep = LoadGradersd(num_graders=5, pad_mode="repeat")({CarKeys.LABELS: paths})[CarKeys.LABEL]
    assert torch.equal(rep, base[[0, 1, 2, 0, 1]])
    first = LoadGradersd(num_graders=2, truncate_mode="first")({CarKeys.LABELS: paths})[CarKeys.LABEL]
    assert torch.equal(first, base[:2])
    with pytest.raises(GraderCountError, match="has 3 grader masks but num_graders=2") as excinfo:
        LoadGradersd(num_graders=2)({CarKeys.LABELS: paths})
    # the advice names options that exist: the bundle's --num_graders, the Python truncate_mode
    assert "--num_graders" in str(excinfo.value) and "truncate_mode='first'" in str(excinfo.value)
    assert "num_graders=None" not in str(excinfo.value)
    with pytest.raises(GraderCountError, match="has 3 grader masks but num_graders=4"):
        LoadGradersd(num_graders=4, pad_mode="error")({CarKeys.LABELS: paths})


def test_fewer_graders_than_num_graders_is_an_error_by_default(tmp_path):
    # the documented behaviour: a case with 3 masks where 4 are expected is refused, naming the case and the counts;
    # padding with empty masks happens only when asked for
    paths = _masks(tmp_path, 3)
    with pytest.raises(
        GraderCountError,
        match=r"case c7 has 3 grader masks but num_graders=4; list 4 masks .*"
        r"pad_mode='empty'",
    ):
        LoadGradersd(num_graders=4)({CarKeys.LABELS: paths, CarKeys.CASE_ID: "c7"})
    assert LoadGradersd(num_graders=4, pad_mode="empty")({CarKeys.LABELS: paths})[CarKeys.LABEL].shape[0] == 4


def test_skip_mode_marks_the_case_and_keeps_a_collatable_label(tmp_path):
    paths = _masks(tmp_path, 3)
    out = LoadGradersd(num_graders=2, on_error="skip")({CarKeys.LABELS: paths, CarKeys.CASE_ID: "c"})
    assert out[CarKeys.LABEL].shape == (2, 10, 12)
    assert out[SKIP_REASON_KEY].startswith("case c has 3 grader masks but num_graders=2")
    bad = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.full((10, 12), 7, np.uint8), AFFINE), bad)
    out = LoadGradersd(num_graders=4, pad_mode="error", on_error="skip")(
        {CarKeys.LABELS: [*paths, str(bad), str(bad)], CarKeys.CASE_ID: "c"}
    )
    assert out[CarKeys.LABEL].shape == (4, 10, 12) and set(out[CarKeys.LABEL].unique().tolist()) <= {0, 1}
    assert out[SKIP_REASON_KEY].count("not binary") == 2 and "5 grader masks" in out[SKIP_REASON_KEY]
    (tmp_path / "odd").mkdir()
    odd = _masks(tmp_path / "odd", 1, shape=(10, 11))
    out = LoadGradersd(on_error="skip")({CarKeys.LABELS: paths + odd, CarKeys.CASE_ID: "c", CarKeys.LABEL: 1})
    assert CarKeys.LABEL not in out and "grader 3 mask" in out[SKIP_REASON_KEY]
    valid = LoadGradersd(on_error="skip")({CarKeys.LABELS: paths})
    assert SKIP_REASON_KEY not in valid and valid[CarKeys.LABEL].shape == (3, 10, 12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"keys": ["a", "b"]}, "one key"),
        ({"num_graders": 0}, "num_graders"),
        ({"pad_mode": "zeros"}, "pad_mode"),
        ({"truncate_mode": "last"}, "truncate_mode"),
        ({"on_error": "ignore"}, "on_error"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoadGradersd(**kwargs)


def test_rand_grader_is_uniform_seeded_and_a_slice():
    label = MetaTensor(torch.arange(4).reshape(4, 1, 1).expand(4, 3, 3).to(torch.uint8), affine=torch.eye(4) * 2)
    t = RandGraderd(index_key="grader_index")
    t.set_random_state(seed=0)
    drawn = []
    for _ in range(400):
        out = t({CarKeys.LABEL: label})
        g = out[CarKeys.GRADER_LABEL]
        assert g.shape == (1, 3, 3) and isinstance(g, MetaTensor) and torch.equal(g.affine, label.affine)
        assert torch.equal(g[0], label[out["grader_index"]])
        drawn.append(out["grader_index"])
    counts = np.bincount(drawn, minlength=4)
    assert counts.min() > 70, counts  # uniform: 100 expected each
    again = RandGraderd(index_key="grader_index").set_random_state(seed=0)
    assert [again({CarKeys.LABEL: label})["grader_index"] for _ in range(400)] == drawn
    other = RandGraderd(index_key="grader_index").set_random_state(seed=1)
    assert [other({CarKeys.LABEL: label})["grader_index"] for _ in range(400)] != drawn


def test_rand_grader_output_is_a_copy_and_bad_inputs():
    label = torch.zeros(2, 3, 3, dtype=torch.uint8)
    out = RandGraderd().set_random_state(0)({CarKeys.LABEL: label})
    out[CarKeys.GRADER_LABEL][0, 0, 0] = 1
    assert label.sum() == 0
    with pytest.raises(ValueError, match="stacked graders"):
        RandGraderd()({CarKeys.LABEL: torch.zeros(0, 3, 3), CarKeys.CASE_ID: "c"})
    marked = {SKIP_REASON_KEY: "case c: broken", CarKeys.CASE_ID: "c"}
    assert RandGraderd()(marked) == marked  # no graders to draw from
    marked[CarKeys.LABEL] = label
    assert RandGraderd().set_random_state(0)(marked)[CarKeys.GRADER_LABEL].shape == (1, 3, 3)  # still collates
