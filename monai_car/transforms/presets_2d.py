"""Ready-made transform chains for 2D datalists (:func:`monai_car.data.load_segmentation_datalist`): RGB image,
label map, optional black-box prediction; the modified Cityscapes' switchable-class flips.

Output per case: ``IMAGE (3, H, W)`` float32 in [0, 1], ``LABEL (1, H, W)`` uint8 monai-car classes (0 .. 24, void
24), ``GRADER_LABEL`` (the same map: the engines' training target), ``BLACKBOX`` ((1, H, W) uint8 label map, or
``(K, H, W)`` float32 channels), ``FLIP_MODE`` ``(5,)`` bool when the class flips run, and ``CASE_ID``.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.data import NumpyReader, PILReader
from monai.transforms import (
    AsDiscreted,
    CastToTyped,
    Compose,
    ConcatItemsd,
    CopyItemsd,
    EnsureTyped,
    MapTransform,
    Resized,
    ScaleIntensityRanged,
)

from monai_car.utils.cityscapes_classes import COPY_IDS, FLIP_PROBABILITIES, NUM_CLASSES, SWITCHABLE_TRAIN_IDS
from monai_car.utils.enums import CarKeys

from .class_flips import FLIP_MODE_KEY, RandSwitchableClassFlipd
from .loading import NamedLoadImaged
from .spatial_2d import LABEL_FORMATS, MapLabelIdsd, RandFlipScaleCropd, check_size_2d
from .utils import case_name

__all__ = [
    "BLACKBOX_FORMATS",
    "BLACKBOX_KEY",
    "CheckSegmentation2Dd",
    "get_eval_transforms_2d",
    "get_load_transforms_2d",
    "get_train_transforms_2d",
]

BLACKBOX_KEY = "blackbox"
"""Key of the black-box prediction (its path in a datalist, its map once loaded)."""

BLACKBOX_FORMATS = (*LABEL_FORMATS, "probabilities")
"""How black-box predictions are stored: a label map in one of :data:`LABEL_FORMATS` (PNG or ``(1, H, W)`` .npy), or
``"probabilities"``: ``(K, H, W)`` channels in a .npy file (K = 25, the monai-car classes)."""


def _spatial(x: object) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape[1:])  # type: ignore[attr-defined]


def _file(x: object) -> str:
    meta = getattr(x, "meta", None)
    return str(meta.get("filename_or_obj", "")) if isinstance(meta, Mapping) else ""


class CheckSegmentation2Dd(MapTransform):
    """Check a loaded 2D case before resizing; errors name the case, the file and the fix.

    - the image is ``(image_channels, H, W)``;
    - the label is a label map ``(1, H, W)`` on the image's grid;
    - the black-box prediction is a label map ``(1, h, w)`` or, with ``blackbox_channels``, ``(K, h, w)`` channels,
      on the image's grid or already at ``target_size``.

    Args:
        keys: ``(image, label, blackbox)`` keys; absent ones (label / blackbox) are skipped, and so is a label left
            as a path (a chain that does not load labels, e.g. inference on a datalist that names them).
        image_channels: 3 for RGB.
        blackbox_channels: the channel count of a probability prediction, ``None`` for a label map.
        target_size: ``(H, W)`` the case is resized to next (``None``: no resizing).
    """

    def __init__(
        self,
        keys: Sequence[Hashable] = (CarKeys.IMAGE, CarKeys.LABEL, BLACKBOX_KEY),
        image_channels: int = 3,
        blackbox_channels: int | None = None,
        target_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        if len(self.keys) != 3:
            raise ValueError(f"CheckSegmentation2Dd takes the (image, label, blackbox) keys, got {self.keys}.")
        self.image_channels = int(image_channels)
        self.blackbox_channels = blackbox_channels
        self.target_size = check_size_2d(target_size, "target_size")

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        image_key, label_key, bb_key = self.keys
        name = case_name(d)
        if image_key not in d:
            raise KeyError(f"case {name} has no '{image_key}'; the datalist entry must name the image.")
        image = d[image_key]
        if image.ndim != 3 or image.shape[0] != self.image_channels:
            raise ValueError(
                f"case {name}: image {_file(image)} has shape {tuple(image.shape)}, expected ({self.image_channels}, "
                "H, W) channel first; store images as RGB (no alpha channel)."
            )
        grid = _spatial(image)
        if label_key in d and not isinstance(d[label_key], (str, os.PathLike)):  # a path: not loaded (no label)
            label = d[label_key]
            if label.ndim != 3 or label.shape[0] != 1 or _spatial(label) != grid:
                raise ValueError(
                    f"case {name}: label {_file(label)} has shape {tuple(label.shape)}, expected a one-channel label "
                    f"map (1, {grid[0]}, {grid[1]}) on the image {_file(image)}'s grid; store label maps as 8-bit "
                    "grey PNG at the image's resolution."
                )
        if bb_key in d:
            bb = d[bb_key]
            channels = 1 if self.blackbox_channels is None else self.blackbox_channels
            grids = {grid} | ({self.target_size} if self.target_size is not None else set())
            if bb.ndim != 3 or bb.shape[0] != channels or _spatial(bb) not in grids:
                what = "a label map (1, H, W)" if channels == 1 else f"({channels}, H, W) class probabilities"
                raise ValueError(
                    f"case {name}: black-box prediction {_file(bb)} has shape {tuple(bb.shape)}, expected {what} at "
                    f"{' or '.join(str(g) for g in sorted(grids))}; check blackbox_format, and store .npy predictions "
                    "channel first."
                )
        return d


def _keys(with_label: bool, with_blackbox: bool) -> tuple[list[str], list[str]]:
    """(all keys, label-map keys) of a case."""
    keys, labels = [CarKeys.IMAGE], []
    if with_label:
        keys.append(CarKeys.LABEL)
        labels.append(CarKeys.LABEL)
    if with_blackbox:
        keys.append(BLACKBOX_KEY)
    return keys, labels


def get_load_transforms_2d(
    with_label: bool = True,
    with_blackbox: bool = False,
    label_format: str = "label_ids",
    blackbox_format: str = "train_ids",
    spatial_size: int | Sequence[int] | None = None,
    num_classes: int = NUM_CLASSES,
) -> list:
    """Load, check, map the class ids and resize a 2D case.

    PNGs are read row-major (``PILReader(reverse_indexing=False)``: ``(C, H, W)``, width last), ``.npy`` predictions
    channel first. The image becomes float32 in [0, 1]; labels and label-map predictions go through
    :class:`MapLabelIdsd` (``label_format`` / ``blackbox_format``) to the monai-car classes; with ``spatial_size``
    everything is resized to it (image and probabilities bilinear with anti-aliasing, label maps
    ``nearest-exact``).

    Args:
        with_label: load ``label``.
        with_blackbox: load ``blackbox``.
        label_format: one of :data:`~monai_car.transforms.spatial_2d.LABEL_FORMATS`.
        blackbox_format: one of :data:`BLACKBOX_FORMATS`.
        spatial_size: ``(H, W)`` (quarter-resolution Cityscapes: ``(256, 512)``) or ``None`` to keep the files'.
        num_classes: channels of a ``"probabilities"`` prediction.

    Returns:
        the list of transforms.
    """
    if label_format not in LABEL_FORMATS:
        raise ValueError(f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}.")
    if blackbox_format not in BLACKBOX_FORMATS:
        raise ValueError(f"blackbox_format must be one of {BLACKBOX_FORMATS}, got {blackbox_format!r}.")
    size = check_size_2d(spatial_size, "spatial_size")
    probs = with_blackbox and blackbox_format == "probabilities"
    keys, labels = _keys(with_label, with_blackbox)
    png = PILReader(reverse_indexing=False)
    xforms: list = [
        NamedLoadImaged([k for k in keys if k != BLACKBOX_KEY], reader=png, image_only=True, ensure_channel_first=True),
    ]
    if with_blackbox:
        xforms.append(
            NamedLoadImaged(
                BLACKBOX_KEY, reader=[NumpyReader(channel_dim=0), png], image_only=True, ensure_channel_first=True
            )
        )
    xforms += [
        CheckSegmentation2Dd(target_size=size, blackbox_channels=num_classes if probs else None),
        EnsureTyped(CarKeys.IMAGE, dtype=torch.float32, track_meta=True),
        ScaleIntensityRanged(CarKeys.IMAGE, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
    ]
    if with_label:
        xforms.append(MapLabelIdsd(CarKeys.LABEL, label_format))
    if with_blackbox and not probs:
        xforms.append(MapLabelIdsd(BLACKBOX_KEY, blackbox_format))
        labels.append(BLACKBOX_KEY)
    if probs:
        xforms.append(EnsureTyped(BLACKBOX_KEY, dtype=torch.float32, track_meta=True))
    if size is not None:
        modes = ["nearest-exact" if k in labels else "bilinear" for k in keys]
        xforms.append(Resized(keys, spatial_size=size, mode=modes, anti_aliasing=[k not in labels for k in keys]))
        if labels:
            xforms.append(CastToTyped(labels, dtype=torch.uint8))
    return xforms


def _finish(
    xforms: list,
    with_label: bool,
    with_blackbox: bool,
    blackbox_one_hot: bool,
    num_classes: int,
    seed: int | None,
    concat_blackbox: bool = False,
) -> Compose:
    if with_blackbox and blackbox_one_hot:
        xforms.append(AsDiscreted(BLACKBOX_KEY, to_onehot=num_classes))
    if concat_blackbox:
        if not with_blackbox:
            raise ValueError("concat_blackbox needs with_blackbox=True (a black-box prediction to concatenate).")
        # F's input: image channels, then the prediction's channels (kept under BLACKBOX_KEY too, for the metrics)
        xforms.append(ConcatItemsd([CarKeys.IMAGE, BLACKBOX_KEY], name=CarKeys.IMAGE, dim=0))
    if with_label:
        xforms.append(CopyItemsd(CarKeys.LABEL, names=CarKeys.GRADER_LABEL))
    chain = Compose(xforms)
    if seed is not None:
        chain.set_random_state(seed=seed)
    return chain


def _class_flips(with_label: bool, with_blackbox: bool, layout: Mapping | None) -> RandSwitchableClassFlipd:
    """The flips of the label and (``with_blackbox``) the black-box prediction, together."""
    keys, _ = _keys(with_label, with_blackbox)
    layout = dict(layout or {})
    unknown = sorted(set(layout) - {"switchable", "copies", "probabilities"})
    if unknown:
        raise ValueError(f"flip_layout takes 'switchable', 'copies' and 'probabilities', got also {unknown}.")
    return RandSwitchableClassFlipd(
        keys[1:],
        switchable=layout.get("switchable", SWITCHABLE_TRAIN_IDS),
        copies=layout.get("copies", COPY_IDS),
        probabilities=layout.get("probabilities", FLIP_PROBABILITIES),
        mode_key=FLIP_MODE_KEY,
    )


def get_train_transforms_2d(
    with_blackbox: bool = False,
    label_format: str = "label_ids",
    blackbox_format: str = "train_ids",
    spatial_size: int | Sequence[int] | None = None,
    crop_size: int | Sequence[int] | None = None,
    flip_prob: float = 0.5,
    scale_range: Sequence[float] | None = None,
    class_flips: bool = True,
    flip_layout: Mapping | None = None,
    blackbox_one_hot: bool = False,
    num_classes: int = NUM_CLASSES,
    seed: int | None = 0,
    flip_blackbox: bool = True,
    concat_blackbox: bool = False,
) -> Compose:
    """Training chain: load (:func:`get_load_transforms_2d`) -> one random flip / scale / crop on all keys
    (:class:`~monai_car.transforms.spatial_2d.RandFlipScaleCropd`, label maps nearest, padding void) -> the
    switchable-class flips on label and black-box prediction together
    (:class:`~monai_car.transforms.class_flips.RandSwitchableClassFlipd`) -> optional one-hot prediction ->
    ``GRADER_LABEL``.

    Args:
        with_blackbox: load and transform the ``blackbox`` prediction too.
        label_format, blackbox_format, spatial_size, num_classes: see :func:`get_load_transforms_2d`.
        crop_size: ``(H, W)`` random crop after scaling, ``None`` for none.
        flip_prob: probability of the horizontal flip.
        scale_range: ``(low, high)`` random isotropic scale factors, ``None`` for none.
        class_flips: draw the switchable-class flips (the modified Cityscapes' known distribution).
        flip_layout: ``{"switchable": ..., "copies": ..., "probabilities": ...}`` overriding the defaults of
            :mod:`monai_car.utils.cityscapes_classes`.
        blackbox_one_hot: turn a label-map prediction into ``num_classes`` one-hot channels (F's input).
        seed: seed of every random draw (``Compose.set_random_state``); ``None`` leaves them unseeded.
        flip_blackbox: flip the black-box prediction's classes together with the label's (default). ``False``
            flips the label only: what the known-distribution experiment needs when the black box never predicts a
            copy class (a segmenter of the original classes), since a prediction flipped with the label would tell
            F the flip drawn for the image, and F would learn to copy it instead of the flip probabilities.
        concat_blackbox: concatenate the black-box channels (one-hot or probabilities) to the image, as F's input
            ``(3 + K, H, W)`` (the black box given as a folder of prediction maps).
    """
    keys, labels = _keys(True, with_blackbox)
    if with_blackbox and blackbox_format != "probabilities":
        labels.append(BLACKBOX_KEY)
    xforms = get_load_transforms_2d(True, with_blackbox, label_format, blackbox_format, spatial_size, num_classes)
    xforms.append(RandFlipScaleCropd(keys, labels, flip_prob=flip_prob, scale_range=scale_range, crop_size=crop_size))
    if class_flips:
        xforms.append(_class_flips(True, with_blackbox and flip_blackbox, flip_layout))
    one_hot = blackbox_one_hot and blackbox_format != "probabilities"
    return _finish(xforms, True, with_blackbox, one_hot, num_classes, seed, concat_blackbox)


def get_eval_transforms_2d(
    with_label: bool = True,
    with_blackbox: bool = False,
    label_format: str = "label_ids",
    blackbox_format: str = "train_ids",
    spatial_size: int | Sequence[int] | None = None,
    class_flips: bool = False,
    flip_layout: Mapping | None = None,
    blackbox_one_hot: bool = False,
    num_classes: int = NUM_CLASSES,
    seed: int | None = 0,
    flip_blackbox: bool = True,
    concat_blackbox: bool = False,
) -> Compose:
    """Evaluation / inference chain: load, map and resize; no spatial augmentation.

    By default the labels keep the original classes (the known-distribution metrics weigh all 32 modes of them);
    ``class_flips=True`` draws the flips as in training, reproducibly from ``seed`` (e.g. for F's validation loss).
    Without labels (``with_label=False``) only the image (and prediction) is loaded.

    Args: as :func:`get_train_transforms_2d`, plus ``with_label``.
    """
    xforms = get_load_transforms_2d(with_label, with_blackbox, label_format, blackbox_format, spatial_size, num_classes)
    with_blackbox_loaded = with_blackbox
    if class_flips:
        if not (with_label or with_blackbox):
            raise ValueError("class_flips needs a label or a black-box prediction to flip.")
        with_blackbox = with_blackbox and flip_blackbox
        if not (with_label or with_blackbox):
            raise ValueError("class_flips with flip_blackbox=False needs a label to flip.")
        xforms.append(_class_flips(with_label, with_blackbox, flip_layout))
    one_hot = blackbox_one_hot and blackbox_format != "probabilities"
    return _finish(xforms, with_label, with_blackbox_loaded, one_hot, num_classes, seed, concat_blackbox)
