"""Dictionary transforms for multi-grader segmentation data (LIDC-style: one image, R graders' masks) and for 2D
label maps with a black-box prediction (the modified Cityscapes)."""

from __future__ import annotations

from .class_flips import FLIP_MODE_KEY, RandSwitchableClassFlipd, check_flip_layout
from .graders import GraderCountError, LoadGradersd, RandGraderd
from .loading import ImageReadError, NamedLoadImaged, image_read_error, read_nifti
from .presets import get_eval_transforms, get_inference_transforms, get_load_transforms, get_train_transforms
from .presets_2d import (
    BLACKBOX_FORMATS,
    BLACKBOX_KEY,
    CheckSegmentation2Dd,
    get_eval_transforms_2d,
    get_load_transforms_2d,
    get_train_transforms_2d,
)
from .spatial_2d import LABEL_FORMATS, MapLabelIdsd, RandFlipScaleCropd, check_size_2d, label_lookup_table
from .utils import SKIP_REASON_KEY, case_name, mark_invalid, skip_reason
from .validation import CaseValidationError, ValidateCased

__all__ = [
    "BLACKBOX_FORMATS",
    "BLACKBOX_KEY",
    "FLIP_MODE_KEY",
    "LABEL_FORMATS",
    "SKIP_REASON_KEY",
    "CaseValidationError",
    "CheckSegmentation2Dd",
    "GraderCountError",
    "ImageReadError",
    "LoadGradersd",
    "MapLabelIdsd",
    "RandFlipScaleCropd",
    "NamedLoadImaged",
    "RandGraderd",
    "RandSwitchableClassFlipd",
    "ValidateCased",
    "case_name",
    "check_flip_layout",
    "check_size_2d",
    "get_eval_transforms",
    "get_eval_transforms_2d",
    "get_inference_transforms",
    "get_load_transforms",
    "get_load_transforms_2d",
    "get_train_transforms",
    "get_train_transforms_2d",
    "image_read_error",
    "label_lookup_table",
    "mark_invalid",
    "read_nifti",
    "skip_reason",
]
