"""Checking one loaded case before it reaches a network or a metric."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform

from monai_car.utils.enums import CarKeys
from monai_car.utils.validation import as_plain_tensor

from .utils import SKIP_REASON_KEY, case_name, check_on_error, mark_invalid, non_binary_values, skip_reason

__all__ = ["ValidateCased", "CaseValidationError", "IMAGE_RANGE_TOLERANCE", "UNIT_IMAGE_RANGE"]

UNIT_IMAGE_RANGE = (0.0, 1.0)
"""The intensity range the training and evaluation pipelines expect: CT windowed to [0, 1]."""

IMAGE_RANGE_TOLERANCE = 0.01
"""How far outside ``image_range`` an image may stray (interpolation, rounding) before it is refused."""

_WINDOW_HINT = (
    "the pipelines expect CT windowed to [0, 1]: window it first, e.g. clip((HU + 1000) / 1400, 0, 1) for the HU "
    "window [-1000, 400] that the demo data and the preprocessing builders use (preprocessing.crops.window_hu; "
    "monai-car-lidc build --hu-window)"
)


class CaseValidationError(ValueError):
    """A case failed :class:`ValidateCased`; the message names the case and every problem found."""


def _as_tensor(x: object) -> torch.Tensor | None:
    if isinstance(x, np.ndarray):
        return torch.as_tensor(x)
    if isinstance(x, torch.Tensor):
        return as_plain_tensor(x, "x")
    return None


class ValidateCased(MapTransform):
    """Check a loaded case and fail with a message naming it, or mark it to be skipped.

    Checks (all problems of the case are reported together):

    - the image is a channel-first array ``(C, *spatial)`` (with ``spatial_dims`` spatial dims when given) with no
      NaN or inf values, and its values lie in ``image_range`` (by default [0, 1], within
      :data:`IMAGE_RANGE_TOLERANCE`): an image in Hounsfield units is refused, never normalised silently;
    - labels present when ``require_labels`` (a case without labels in evaluation is an error, never a silent
      wrong number);
    - the stacked graders ``(R, *spatial)`` are on the image's grid, binary, and ``R == num_graders`` when given;
    - the drawn grader ``(1, *spatial)``, when present, is on the image's grid and binary.

    It also writes ``case_key`` when the case has none (from the image file name), so that later messages and
    output folders can name it.

    With ``on_error="skip"``, a failing case is not raised but marked: ``data[SKIP_REASON_KEY]`` holds the reason
    (a valid case gets ``""``, so that every case of a batch has the key). Drop marked cases before batching with
    :func:`monai_car.data.split_valid_cases`, which also reports them. A case already marked by an earlier
    transform (e.g. :class:`~monai_car.transforms.LoadGradersd` with ``on_error="skip"``) keeps its mark; with
    ``on_error="raise"`` its reason is raised.

    Args:
        image_key: the image key.
        label_key: the stacked graders' key.
        grader_key: the drawn grader's key (checked when present).
        num_graders: the required number of graders ``R``; ``None`` accepts any ``R >= 1``.
        spatial_dims: the required number of spatial dims (2 or 3); ``None`` accepts either.
        image_range: ``(low, high)`` the image values must lie in (within :data:`IMAGE_RANGE_TOLERANCE`); default
            :data:`UNIT_IMAGE_RANGE`, the windowed [0, 1] the pipelines expect; ``None`` skips the check.
        require_labels: whether a case without ``label_key`` is an error.
        on_error: ``"raise"`` or ``"skip"``.
        case_key: the key of the case identifier.
    """

    def __init__(
        self,
        image_key: Hashable = CarKeys.IMAGE,
        label_key: Hashable = CarKeys.LABEL,
        grader_key: Hashable = CarKeys.GRADER_LABEL,
        num_graders: int | None = None,
        spatial_dims: int | None = None,
        image_range: tuple[float, float] | None = UNIT_IMAGE_RANGE,
        require_labels: bool = True,
        on_error: str = "raise",
        case_key: Hashable = CarKeys.CASE_ID,
    ) -> None:
        super().__init__([image_key, label_key, grader_key], allow_missing_keys=True)
        if num_graders is not None and (isinstance(num_graders, bool) or int(num_graders) < 1):
            raise ValueError(f"num_graders must be a positive int or None, got {num_graders!r}.")
        if spatial_dims is not None and spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2, 3 or None, got {spatial_dims!r}.")
        self.image_key, self.label_key, self.grader_key = image_key, label_key, grader_key
        self.num_graders = None if num_graders is None else int(num_graders)
        if image_range is not None:
            if len(image_range) != 2 or not float(image_range[0]) < float(image_range[1]):
                raise ValueError(f"image_range must be (low, high) with low < high, or None; got {image_range!r}.")
            image_range = (float(image_range[0]), float(image_range[1]))
        self.spatial_dims = spatial_dims
        self.image_range = image_range
        self.require_labels = require_labels
        self.on_error = check_on_error(on_error)
        self.case_key = case_key

    def _check_image(self, image: object) -> tuple[list[str], tuple[int, ...] | None]:
        t = _as_tensor(image)
        if t is None:
            return [f"'{self.image_key}' is not a loaded array ({type(image).__name__}); load it first"], None
        want = None if self.spatial_dims is None else self.spatial_dims + 1
        if t.ndim < 2 or (want is not None and t.ndim != want):
            dims = "(C, *spatial)" if want is None else f"(C, *spatial) with {self.spatial_dims} spatial dims"
            return [f"image has shape {tuple(t.shape)}, expected {dims} (channel first)"], None
        problems = []
        if t.is_floating_point() or t.is_complex():
            n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            if n_nan or n_inf:
                problems.append(f"image holds {n_nan} NaN and {n_inf} inf values")
        problems += self._check_range(t, image)
        return problems, tuple(t.shape[1:])

    def _check_range(self, t: torch.Tensor, image: object) -> list[str]:
        if self.image_range is None or t.numel() == 0 or t.is_complex():
            return []
        finite = t[torch.isfinite(t)] if t.is_floating_point() else t
        if finite.numel() == 0:
            return []
        lo, hi = float(finite.min()), float(finite.max())
        low, high = self.image_range
        if lo >= low - IMAGE_RANGE_TOLERANCE and hi <= high + IMAGE_RANGE_TOLERANCE:
            return []
        meta = getattr(image, "meta", None)
        source = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
        where = f"image {source}" if source else "image"
        hint = _WINDOW_HINT if self.image_range == UNIT_IMAGE_RANGE else f"rescale it to [{low:g}, {high:g}]"
        return [f"{where} values span [{lo:.4g}, {hi:.4g}], outside [{low:g}, {high:g}]; {hint}"]

    def _check_masks(self, key: Hashable, x: object, spatial: tuple[int, ...] | None, one: bool) -> list[str]:
        t = _as_tensor(x)
        what = "drawn grader" if one else "graders"
        if t is None:
            return [f"{what} '{key}' is not a loaded array ({type(x).__name__})"]
        problems = []
        if spatial is not None and tuple(t.shape[1:]) != spatial:
            problems.append(
                f"{what} '{key}' have shape {tuple(t.shape)} but the image's spatial shape is {spatial} (expected "
                f"({'1' if one else 'R'}, {', '.join(map(str, spatial))}))"
            )
        elif t.ndim < 2:
            problems.append(f"{what} '{key}' have shape {tuple(t.shape)}, expected (R, *spatial)")
        count = t.shape[0] if t.ndim >= 1 else 0
        if one and count != 1:
            problems.append(f"{what} '{key}' must hold 1 mask, got {count}")
        if not one:
            if count < 1:
                problems.append(f"{what} '{key}' hold no mask")
            elif self.num_graders is not None and count != self.num_graders:
                problems.append(f"{count} graders in '{key}' but num_graders={self.num_graders}")
        bad = non_binary_values(t)
        if bad:
            problems.append(f"{what} '{key}' are not binary (values such as {bad})")
        return problems

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        if not d.get(self.case_key):
            d[self.case_key] = case_name(d)
        name = str(d[self.case_key])
        problems: list[str] = []
        spatial = None
        if self.image_key not in d:
            problems.append(f"no image ('{self.image_key}')")
        else:
            image_problems, spatial = self._check_image(d[self.image_key])
            problems += image_problems
        if d.get(self.label_key) is None:
            if self.require_labels and not skip_reason(d):
                problems.append(f"no labels ('{self.label_key}'), but labels are required here")
        else:
            problems += self._check_masks(self.label_key, d[self.label_key], spatial, one=False)
        if d.get(self.grader_key) is not None:
            problems += self._check_masks(self.grader_key, d[self.grader_key], spatial, one=True)

        previous = skip_reason(d)
        if not problems and not previous:
            if self.on_error == "skip":
                d[SKIP_REASON_KEY] = ""
            return d
        message = f"case {name}: " + "; ".join(problems) if problems else ""
        if self.on_error == "raise":
            raise CaseValidationError("; ".join(m for m in (previous, message) if m) + ".")
        if message:
            mark_invalid(d, message)
        return d
