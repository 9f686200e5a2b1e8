"""Ready-made transform chains for the LIDC-style datalists (:func:`monai_car.data.load_car_datalist`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import ImageReader
from monai.transforms import Compose, EnsureTyped, RandFlipd, ResizeWithPadOrCropd, ScaleIntensityRanged

from monai_car.utils.enums import CarKeys

from .graders import LoadGradersd, RandGraderd
from .loading import NamedLoadImaged
from .validation import ValidateCased

__all__ = ["get_load_transforms", "get_train_transforms", "get_eval_transforms", "get_inference_transforms"]


def _spatial_size(crop_size: int | Sequence[int] | None, spatial_dims: int) -> tuple[int, ...] | None:
    if crop_size is None:
        return None
    if isinstance(crop_size, int) and not isinstance(crop_size, bool):
        size = (crop_size,) * spatial_dims
    elif isinstance(crop_size, Sequence) and len(crop_size) == spatial_dims:
        size = tuple(int(c) for c in crop_size)
    else:
        raise ValueError(f"crop_size must be an int, {spatial_dims} ints or None, got {crop_size!r}.")
    if any(c < 1 for c in size):
        raise ValueError(f"crop_size must be positive, got {crop_size!r}.")
    return size


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")


def get_load_transforms(
    spatial_dims: int = 2,
    num_graders: int | None = 4,
    with_labels: bool = True,
    pad_mode: str = "error",
    truncate_mode: str = "error",
    on_error: str = "raise",
    reader: ImageReader | str | None = None,
) -> list:
    """Load and check a case: ``IMAGE (1, *spatial)`` float32 ``MetaTensor`` and ``LABEL (R, *spatial)`` uint8.

    :class:`NamedLoadImaged` (MONAI's ``LoadImaged``, channel first, read errors naming the file) ->
    ``EnsureTyped`` float32 -> :class:`LoadGradersd` (checks the count against ``num_graders``) ->
    :class:`ValidateCased`. With ``on_error="skip"`` bad cases are marked instead of raised
    (use with :func:`monai_car.data.split_valid_cases`).

    Args:
        spatial_dims: 2 (slices) or 3 (volumes).
        num_graders: graders per case after padding/truncation; ``None`` keeps each case's own number.
        with_labels: load the graders (``LABELS`` paths -> ``LABEL``); ``False`` for unlabelled inference.
        pad_mode: :class:`LoadGradersd` policy for cases with fewer graders: ``"error"`` (default: such a case is
            an error naming it), or the explicit opt-in ``"empty"``/``"repeat"``.
        truncate_mode: :class:`LoadGradersd` policy for cases with more graders.
        on_error: ``"raise"`` or ``"skip"``.
        reader: MONAI image reader for image and masks (``None``: chosen by file extension).

    Returns:
        the list of transforms (wrap it in ``Compose``).
    """
    _check_dims(spatial_dims)
    xforms: list = [
        NamedLoadImaged(CarKeys.IMAGE, reader=reader, image_only=True, ensure_channel_first=True),
        EnsureTyped(CarKeys.IMAGE, dtype=torch.float32, track_meta=True),
    ]
    if with_labels:
        xforms.append(
            LoadGradersd(
                CarKeys.LABELS,
                num_graders=num_graders,
                pad_mode=pad_mode,
                truncate_mode=truncate_mode,
                reader=reader,
                on_error=on_error,
            )
        )
    xforms.append(
        ValidateCased(
            num_graders=num_graders if with_labels else None,
            spatial_dims=spatial_dims,
            require_labels=with_labels,
            on_error=on_error,
        )
    )
    return xforms


def get_train_transforms(
    spatial_dims: int = 2,
    crop_size: int | Sequence[int] | None = 128,
    num_graders: int | None = 4,
    flip_prob: float = 0.5,
    flip_axis: int = 0,
    seed: int | None = 0,
    pad_mode: str = "error",
    on_error: str = "raise",
    reader: ImageReader | str | None = None,
    truncate_mode: str = "error",
) -> Compose:
    """Training chain: load + check, lesion-centred crop, random flip of image and graders together, one grader.

    The crops of the data sets are already centred on the lesion (180 x 180 from the builders), so the training crop
    is the central ``crop_size`` (``ResizeWithPadOrCropd``: a centre crop, or a symmetric zero pad when the image is
    smaller). The flip is MONAI's ``RandFlipd`` over ``IMAGE`` and ``LABEL`` in one call, so one draw flips the
    image and *all* graders identically (the authors' code flipped only the image); the drawn grader
    (:class:`RandGraderd`) is taken after the flip, from the flipped graders.

    Output per case: ``IMAGE (1, *spatial)`` float32, ``LABEL (R, *spatial)`` uint8, ``GRADER_LABEL (1, *spatial)``
    uint8 (all ``MetaTensor`` with their affines), ``CASE_ID`` and the datalist's other fields.

    Args:
        spatial_dims: 2 or 3.
        crop_size: the centre crop (int for all spatial dims, or one per dim); ``None`` keeps the full image.
        num_graders: graders per case (``R``); ``None`` keeps each case's own number (then batch size 1 or equal
            counts are needed to collate).
        flip_prob: probability of the flip.
        flip_axis: the spatial axis flipped (0-based, without the channel axis). The preprocessing builders write
            RAS-canonical arrays, so axis 0 is the patient's left-right axis: the paper's horizontal flip of an
            axial slice. (For crops stored as displayed images, rows x columns, use 1.)
        seed: seed of all random draws (``Compose.set_random_state``); ``None`` leaves them unseeded.
        pad_mode: :class:`LoadGradersd` policy for cases with fewer graders than ``num_graders``: ``"error"``
            (default), or the explicit opt-in ``"empty"`` (all-zero masks) / ``"repeat"``.
        on_error: ``"raise"`` (default) fails on a bad case, naming it; ``"skip"`` marks it with
            :data:`~monai_car.transforms.SKIP_REASON_KEY` and lets it through (it still collates when its graders
            could be stacked and a ``crop_size`` is set), for the engines to drop and report. Cleaner: drop bad
            cases before training with :func:`monai_car.data.split_valid_cases`.
        reader: MONAI image reader.
        truncate_mode: :class:`LoadGradersd` policy for cases with more graders than ``num_graders``: ``"error"``
            (default), or the explicit opt-in ``"first"`` (the first ``num_graders`` masks in datalist order).
    """
    _check_dims(spatial_dims)
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}.")
    if not 0 <= flip_axis < spatial_dims:
        raise ValueError(f"flip_axis must be a spatial axis in [0, {spatial_dims - 1}], got {flip_axis}.")
    size = _spatial_size(crop_size, spatial_dims)
    xforms = get_load_transforms(spatial_dims, num_graders, True, pad_mode, truncate_mode, on_error, reader)
    keys = [CarKeys.IMAGE, CarKeys.LABEL]
    if size is not None:
        xforms.append(ResizeWithPadOrCropd(keys, spatial_size=size, mode="constant"))
    xforms += [RandFlipd(keys, prob=flip_prob, spatial_axis=flip_axis), RandGraderd(CarKeys.LABEL)]
    chain = Compose(xforms)
    if seed is not None:
        chain.set_random_state(seed=seed)
    return chain


def get_eval_transforms(
    spatial_dims: int = 2,
    crop_size: int | Sequence[int] | None = 128,
    num_graders: int | None = 4,
    with_labels: bool = True,
    seed: int | None = 0,
    pad_mode: str = "error",
    on_error: str = "raise",
    reader: ImageReader | str | None = None,
    truncate_mode: str = "error",
) -> Compose:
    """Evaluation/inference chain: load + check and the same centre crop as training, no augmentation.

    With labels the output has ``IMAGE (1, *spatial)``, ``LABEL (R, *spatial)``, ``GRADER_LABEL (1, *spatial)``
    (drawn with ``seed``, for F's validation loss) and ``CASE_ID``; a case without labels is an error. With
    ``with_labels=False`` only ``IMAGE`` and ``CASE_ID``.

    Args: as :func:`get_train_transforms`, plus ``with_labels``.
    """
    _check_dims(spatial_dims)
    size = _spatial_size(crop_size, spatial_dims)
    xforms = get_load_transforms(spatial_dims, num_graders, with_labels, pad_mode, truncate_mode, on_error, reader)
    keys = [CarKeys.IMAGE, CarKeys.LABEL] if with_labels else [CarKeys.IMAGE]
    if size is not None:
        xforms.append(ResizeWithPadOrCropd(keys, spatial_size=size, mode="constant"))
    if with_labels:
        xforms.append(RandGraderd(CarKeys.LABEL))
    chain = Compose(xforms)
    if seed is not None:
        chain.set_random_state(seed=seed)
    return chain


def get_inference_transforms(
    spatial_dims: int = 2,
    crop_size: int | Sequence[int] | None = 128,
    hu_window: Sequence[float] | None = None,
    reader: ImageReader | str | None = None,
) -> Compose:
    """Pre-processing of one unlabelled image ``{"image": path}`` for the network: MONAI's bundle ``preprocessing``.

    :class:`NamedLoadImaged` (channel first) -> ``EnsureTyped`` float32 -> with ``hu_window = (low, high)``,
    ``ScaleIntensityRanged`` from that HU window to [0, 1] (clipped) -> :class:`ValidateCased` (finite values in
    [0, 1]) -> the centre ``crop_size`` (``ResizeWithPadOrCropd``, as in training). Every step is invertible or
    metadata-only, so MONAI's ``Invertd`` maps a prediction back onto the input's grid.

    Args:
        spatial_dims: 2 or 3.
        crop_size: the centre crop (int for all spatial dims, or one per dim); ``None`` keeps the full image.
        hu_window: ``(low, high)`` in HU for CT images in Hounsfield units; ``None`` when the image is already a
            crop in [0, 1] (the data sets' crops, windowed to [-1000, 400] HU when they were built).
        reader: MONAI image reader.

    Raises:
        ValueError: bad ``spatial_dims``, ``crop_size`` or ``hu_window``.
    """
    _check_dims(spatial_dims)
    size = _spatial_size(crop_size, spatial_dims)
    xforms = get_load_transforms(spatial_dims, None, with_labels=False, reader=reader)
    if hu_window is not None:
        if isinstance(hu_window, (str, bytes)) or len(hu_window) != 2 or not float(hu_window[0]) < float(hu_window[1]):
            raise ValueError(f"hu_window must be (low, high) in HU with low < high, or None; got {hu_window!r}.")
        scale = ScaleIntensityRanged(
            CarKeys.IMAGE, a_min=float(hu_window[0]), a_max=float(hu_window[1]), b_min=0.0, b_max=1.0, clip=True
        )
        xforms.insert(2, scale)  # before ValidateCased, which checks the [0, 1] range
    if size is not None:
        xforms.append(ResizeWithPadOrCropd(CarKeys.IMAGE, spatial_size=size, mode="constant"))
    return Compose(xforms)
