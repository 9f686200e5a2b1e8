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
