from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from monai_car.transforms import SKIP_REASON_KEY, CaseValidationError, ValidateCased
from monai_car.utils import CarKeys


def _case(**overrides) -> dict:
    case = {
        CarKeys.IMAGE: torch.rand(1, 8, 8),
        CarKeys.LABEL: (torch.rand(4, 8, 8) > 0.5).to(torch.uint8),
        CarKeys.GRADER_LABEL: torch.zeros(1, 8, 8, dtype=torch.uint8),
        CarKeys.CASE_ID: "case7",
    }
    case.update(overrides)
    return case


def test_valid_case_passes_unchanged():
    case = _case()
    out = ValidateCased(num_graders=4, spatial_dims=2)(case)
    assert out.keys() == case.keys() and all(out[k] is case[k] for k in case)
    skip = ValidateCased(on_error="skip")(case)
    assert skip[SKIP_REASON_KEY] == ""


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({CarKeys.IMAGE: torch.tensor([[[float("nan"), 0.0], [0.0, float("inf")]]])}, "1 NaN and 1 inf"),
        ({CarKeys.LABEL: torch.zeros(3, 8, 8, dtype=torch.uint8)}, "3 graders in 'label' but num_graders=4"),
        ({CarKeys.LABEL: torch.full((4, 8, 8), 2, dtype=torch.uint8)}, r"not binary \(values such as \[2.0\]"),
        ({CarKeys.LABEL: torch.zeros(4, 8, 9, dtype=torch.uint8)}, r"shape \(4, 8, 9\) but the image's spatial shape"),
        ({CarKeys.GRADER_LABEL: torch.zeros(2, 8, 8)}, "must hold 1 mask, got 2"),
        ({CarKeys.IMAGE: torch.rand(1, 8, 8, 2)}, r"expected \(C, \*spatial\) with 2 spatial dims"),
        ({CarKeys.IMAGE: "image.nii.gz"}, "not a loaded array"),
    ],
)
def test_problems_name_the_case(overrides, message):
    with pytest.raises(CaseValidationError, match=rf"^case case7: .*{message}"):
        ValidateCased(num_graders=4, spatial_dims=2)(_case(**overrides))


def test_images_outside_unit_range_are_refused_with_the_window_to_use():
    hu = MetaTensor(torch.full((1, 8, 8), -1000.0), meta={"filename_or_obj": "/data/ct_hu.nii.gz"})
    hu[0, 0, 0] = 400.0
    with pytest.raises(
        CaseValidationError,
        match=r"^case case7: image /data/ct_hu.nii.gz values span \[-1000, 400\], outside \[0, 1\]; the pipelines "
        r"expect CT windowed to \[0, 1\]: .*clip\(\(HU \+ 1000\) / 1400, 0, 1\) for the HU window \[-1000, 400\]",
    ):
        ValidateCased()(_case(**{CarKeys.IMAGE: hu}))
    with pytest.raises(CaseValidationError, match=r"values span \[3, 255\]"):  # 8-bit, not scaled
        ValidateCased()(_case(**{CarKeys.IMAGE: torch.arange(64, dtype=torch.uint8).reshape(1, 8, 8) * 4 + 3}))
    out = ValidateCased(on_error="skip")(_case(**{CarKeys.IMAGE: torch.full((1, 8, 8), 1.5)}))
    assert "values span [1.5, 1.5], outside [0, 1]" in out[SKIP_REASON_KEY]
    # rounding just outside [0, 1] passes; the check can be moved or turned off
    rounded = torch.rand(1, 8, 8)
    rounded[0, 0, :2] = torch.tensor([-0.005, 1.005])
    assert ValidateCased()(_case(**{CarKeys.IMAGE: rounded}))
    assert ValidateCased(image_range=(-1000, 3000))(_case(**{CarKeys.IMAGE: hu}))
    assert ValidateCased(image_range=None)(_case(**{CarKeys.IMAGE: hu}))
    with pytest.raises(CaseValidationError, match=r"outside \[-1, 1\]; rescale it to \[-1, 1\]"):
        ValidateCased(image_range=(-1, 1))(_case(**{CarKeys.IMAGE: hu}))


def test_all_problems_are_reported_together():
    case = _case(**{CarKeys.IMAGE: torch.full((1, 8, 8), float("nan")), CarKeys.LABEL: torch.full((4, 8, 8), 0.5)})
    with pytest.raises(CaseValidationError, match="64 NaN.*not binary"):
        ValidateCased()(case)


def test_missing_labels():
    case = _case()
    del case[CarKeys.LABEL]
    with pytest.raises(CaseValidationError, match="case case7: no labels"):
        ValidateCased()(case)
    assert SKIP_REASON_KEY not in ValidateCased(require_labels=False)(case)


def test_skip_mode_marks_instead_of_raising():
    case = _case(**{CarKeys.LABEL: torch.zeros(2, 8, 8, dtype=torch.uint8)})
    out = ValidateCased(num_graders=4, on_error="skip")(case)
    assert out[SKIP_REASON_KEY].startswith("case case7: 2 graders")
    # an earlier mark is kept, and raised in raise mode
    marked = {CarKeys.IMAGE: torch.rand(1, 8, 8), CarKeys.CASE_ID: "c", SKIP_REASON_KEY: "case c: unreadable mask"}
    assert ValidateCased(on_error="skip")(marked)[SKIP_REASON_KEY] == "case c: unreadable mask"
    with pytest.raises(CaseValidationError, match="unreadable mask"):
        ValidateCased()(marked)


def test_fills_case_id_from_image_file():
    image = MetaTensor(torch.rand(1, 4, 4), meta={"filename_or_obj": "/data/p1_z3.nii.gz"})
    out = ValidateCased(require_labels=False)({CarKeys.IMAGE: image})
    assert out[CarKeys.CASE_ID] == "/data/p1_z3.nii.gz"


def test_bad_arguments():
    with pytest.raises(ValueError, match="on_error"):
        ValidateCased(on_error="warn")
    with pytest.raises(ValueError, match="num_graders"):
        ValidateCased(num_graders=0)
    with pytest.raises(ValueError, match="spatial_dims"):
        ValidateCased(spatial_dims=4)
    with pytest.raises(ValueError, match="image_range"):
        ValidateCased(image_range=(1.0, 0.0))
