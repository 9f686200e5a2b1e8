"""Dictionary transforms for multi-grader segmentation data (LIDC-style: one image, R graders' masks)."""

from __future__ import annotations

from .graders import GraderCountError, LoadGradersd, RandGraderd
from .presets import get_eval_transforms, get_load_transforms, get_train_transforms
from .utils import SKIP_REASON_KEY, case_name, mark_invalid, skip_reason
from .validation import CaseValidationError, ValidateCased

__all__ = [
    "SKIP_REASON_KEY",
    "CaseValidationError",
    "GraderCountError",
    "LoadGradersd",
    "RandGraderd",
    "ValidateCased",
    "case_name",
    "get_eval_transforms",
    "get_load_transforms",
    "get_train_transforms",
    "mark_invalid",
    "skip_reason",
]
