"""Dictionary transforms for multi-grader segmentation data (LIDC-style: one image, R graders' masks)."""

from __future__ import annotations

from .graders import GraderCountError, LoadGradersd, RandGraderd
from .loading import ImageReadError, NamedLoadImaged, image_read_error, read_nifti
from .presets import get_eval_transforms, get_inference_transforms, get_load_transforms, get_train_transforms
from .utils import SKIP_REASON_KEY, case_name, mark_invalid, skip_reason
from .validation import CaseValidationError, ValidateCased

__all__ = [
    "SKIP_REASON_KEY",
    "CaseValidationError",
    "GraderCountError",
    "ImageReadError",
    "LoadGradersd",
    "NamedLoadImaged",
    "RandGraderd",
    "ValidateCased",
    "case_name",
    "get_eval_transforms",
    "get_inference_transforms",
    "get_load_transforms",
    "get_train_transforms",
    "image_read_error",
    "mark_invalid",
    "read_nifti",
    "skip_reason",
]
