"""2D segmentation transforms: class-id mapping of label maps, and one random flip / scale / crop for all keys.

- :class:`MapLabelIdsd` maps a label map's values through a lookup table: Cityscapes ``labelIds`` or ``trainIds``
  to the monai-car classes (:mod:`monai_car.utils.cityscapes_classes`, tables built from cityscapesscripts), or
  any table given.
- :class:`RandFlipScaleCropd` draws one horizontal flip, one isotropic scale factor and one crop per case and
  applies them to every key (image, label, black-box prediction), label maps with nearest-neighbour
  interpolation (``nearest-exact``, aligned with the image's bilinear resampling) and void padding.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Flip, MapTransform, RandomizableTransform, Resize, SpatialCrop, SpatialPad

from monai_car.utils.cityscapes_classes import NUM_CLASSES, VOID, label_id_lookup, train_id_lookup

from .utils import case_name

__all__ = ["LABEL_FORMATS", "MapLabelIdsd", "RandFlipScaleCropd", "check_size_2d", "label_lookup_table"]

LABEL_FORMATS = ("label_ids", "train_ids", "classes")
"""Label map formats: Cityscapes ``labelIds`` (``*_gtFine_labelIds.png``), Cityscapes ``trainIds``
(``*_gtFine_labelTrainIds.png``: 0..18 and 255) and the monai-car classes themselves (0..24)."""


def label_lookup_table(label_format: str) -> np.ndarray:
    """The lookup table of a label format (:data:`LABEL_FORMATS`) to the monai-car classes.

    Returns:
        ``(256,)`` uint8 for ``"label_ids"`` / ``"train_ids"`` (unknown values -> void); ``(NUM_CLASSES,)`` identity
        for ``"classes"`` (so a value above 24 is an error, not silently void).

    Raises:
        ValueError: an unknown format.
    """
    if label_format == "label_ids":
        return label_id_lookup()
    if label_format == "train_ids":
        return train_id_lookup()
    if label_format == "classes":
        return np.arange(NUM_CLASSES, dtype=np.uint8)
    raise ValueError(f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}.")


def _check_label_map(x: object, key: Hashable, data: Mapping) -> torch.Tensor:
    """``x`` as a tensor if it is a channel-first label map ``(1, H, W)`` of integer values, else a clear error."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise TypeError(
            f"case {case_name(data)}: '{key}' must be a loaded label map (1, H, W), got {type(x).__name__}; load it "
            "with LoadImaged first."
        )
    t = torch.as_tensor(x)
    if t.ndim != 3 or t.shape[0] != 1:
        raise ValueError(
            f"case {case_name(data)}: '{key}' must be a channel-first label map (1, H, W), got shape "
            f"{tuple(t.shape)}; load it with ensure_channel_first=True."
        )
    if t.is_floating_point() and not bool(torch.all(t == torch.round(t))):
        raise ValueError(f"case {case_name(data)}: '{key}' holds non-integer values; a label map holds class ids.")
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"case {case_name(data)}: '{key}' has dtype {t.dtype}; a label map holds integer class ids.")
    return t


class MapLabelIdsd(MapTransform):
    """Map the values of label maps through a lookup table: ``out = table[label]``, dtype uint8.

    MONAI's ``MapLabelValued`` maps listed values and leaves any other value as it is; here every value must be a
    valid index of the table (a value outside it is an error naming the case), so a label map in the wrong format
    (e.g. trainIds read as labelIds) fails loudly instead of passing through.

    Args:
        keys: the label-map keys (channel-first ``(1, H, W)``, integer values).
        table: a format name of :data:`LABEL_FORMATS` (``"label_ids"``: Cityscapes labelIds -> 19 trainIds + void
            24, from cityscapesscripts' table; ``"train_ids"``: trainIds with 255 -> void; ``"classes"``: identity
            check of 0..24) or a 1-D integer table (values 0..255).
        allow_missing_keys: do not fail when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        table: str | Sequence[int] | np.ndarray = "label_ids",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(table, str):
            lut = label_lookup_table(table)
            self.table_name = table
        else:
            lut = np.asarray(table)
            if lut.ndim != 1 or lut.size == 0 or not np.issubdtype(lut.dtype, np.integer):
                raise ValueError(f"table must be a format name {LABEL_FORMATS} or a 1-D integer table, got {table!r}.")
            if lut.min() < 0 or lut.max() > 255:
                raise ValueError(
                    f"table values must be in [0, 255] (uint8 label maps), got [{lut.min()}, {lut.max()}]."
                )
            self.table_name = "the given table"
        self.table = torch.as_tensor(lut.astype(np.uint8))

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            label = _check_label_map(d[key], key, d)
            index = label.long()
            lo, hi = int(index.min()), int(index.max())
            if lo < 0 or hi >= len(self.table):
                raise ValueError(
                    f"case {case_name(d)}: '{key}' holds values in [{lo}, {hi}], outside {self.table_name} "
                    f"(0 .. {len(self.table) - 1}); check the datalist's label_format (labelIds vs labelTrainIds "
                    "vs monai-car classes)."
                )
            mapped = self.table[index.reshape(-1)].reshape(index.shape)
            out = d[key]
            if isinstance(out, MetaTensor):
                d[key] = MetaTensor(mapped, meta=dict(out.meta), applied_operations=list(out.applied_operations))
            else:
                d[key] = mapped if isinstance(out, torch.Tensor) else mapped.numpy()
        return d


def _check_range(scale_range: Sequence[float] | None) -> tuple[float, float] | None:
    if scale_range is None:
        return None
    if isinstance(scale_range, (str, bytes)) or len(scale_range) != 2:
        raise ValueError(f"scale_range must be (low, high) or None, got {scale_range!r}.")
    lo, hi = float(scale_range[0]), float(scale_range[1])
    if not 0 < lo <= hi or not np.isfinite(hi):
        raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range!r}.")
    return lo, hi


def check_size_2d(size: int | Sequence[int] | None, name: str) -> tuple[int, int] | None:
    """``size`` as ``(H, W)`` positive ints (an int: a square), ``None`` as is; else ``ValueError`` naming ``name``."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if isinstance(size, (str, bytes)) or not isinstance(size, Sequence) or len(size) != 2:
        raise ValueError(f"{name} must be (H, W), an int or None, got {size!r}.")
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in size):
        raise ValueError(f"{name} must hold positive ints (H, W), got {size!r}.")
    return int(size[0]), int(size[1])


class RandFlipScaleCropd(RandomizableTransform, MapTransform):
    """One random horizontal flip, isotropic scaling and crop per case, applied identically to every key.

    Per call the transform draws, from its own ``RandomState`` (``set_random_state(seed)``, or
    ``Compose.set_random_state``), in this order: the flip (probability ``flip_prob``), the scale factor ``s``
    (uniform in ``scale_range``) and the crop's corner (uniform over the valid positions). Then, on every key:

    1. resize ``(H, W) -> (round(s H), round(s W))`` (bilinear for ``keys`` that are not ``label_keys``,
       ``nearest-exact`` for ``label_keys``: the label's nearest grid point of the image's bilinear sample, so a
       label stays on its image's pixels);
    2. pad symmetrically to at least ``crop_size`` (``pad_value`` for images and probabilities, ``label_pad_value``,
       void by default, for label maps, so padding is ignored by the losses);
    3. crop ``crop_size`` at the drawn corner;
    4. flip the width axis (``flip_axis``) when drawn.

    All keys must share one spatial shape ``(H, W)`` (channel first). The outputs keep their dtype (label maps stay
    integer) and, for ``MetaTensor`` inputs, the affine follows MONAI's spatial transforms.

    Args:
        keys: every key to transform (image, label, black-box prediction ...).
        label_keys: the keys among ``keys`` that are label maps.
        flip_prob: probability of the horizontal flip.
        flip_axis: the spatial axis flipped: 1, the width of ``(C, H, W)`` images read in row-major order (MONAI's
            ``PILReader(reverse_indexing=False)``, as the 2D presets read PNGs).
        scale_range: ``(low, high)`` scale factors, or ``None`` for no scaling.
        crop_size: ``(H, W)`` of the output crop (an int for a square), or ``None`` for no crop.
        pad_value: padding of the non-label keys.
        label_pad_value: padding of the label maps.
        allow_missing_keys: do not fail when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: KeysCollection = (),
        flip_prob: float = 0.5,
        flip_axis: int = 1,
        scale_range: Sequence[float] | None = None,
        crop_size: int | Sequence[int] | None = None,
        pad_value: float = 0.0,
        label_pad_value: int = VOID,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        labels = tuple(label_keys) if isinstance(label_keys, (list, tuple)) else (label_keys,)
        unknown = [k for k in labels if k not in self.keys]
        if unknown:
            raise ValueError(f"label_keys {unknown} are not among keys {list(self.keys)}; add them to keys.")
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}.")
        if flip_axis not in (0, 1):
            raise ValueError(f"flip_axis must be a spatial axis of (C, H, W), 0 or 1, got {flip_axis!r}.")
        self.label_keys = labels
        self.flip_prob = float(flip_prob)
        self.flip_axis = int(flip_axis)
        self.scale_range = _check_range(scale_range)
        self.crop_size = check_size_2d(crop_size, "crop_size")
        self.pad_value = float(pad_value)
        self.label_pad_value = int(label_pad_value)
        self._flip = False
        self._scale = 1.0
        self._corner = (0, 0)

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        """Draw the flip, the scale factor and the crop corner for an input of ``spatial_shape`` ``(H, W)``."""
        super().randomize(None)
        self._flip = bool(self.R.random_sample() < self.flip_prob)
        self._scale = float(self.R.uniform(*self.scale_range)) if self.scale_range is not None else 1.0
        scaled = self._scaled_shape(spatial_shape)
        if self.crop_size is None:
            self._corner = (0, 0)
        else:
            padded = [max(s, c) for s, c in zip(scaled, self.crop_size)]
            self._corner = tuple(int(self.R.randint(p - c + 1)) for p, c in zip(padded, self.crop_size))

    def _scaled_shape(self, spatial_shape: Sequence[int]) -> tuple[int, int]:
        return tuple(max(1, int(round(s * self._scale))) for s in spatial_shape)  # type: ignore[return-value]

    def _apply(self, x: torch.Tensor, is_label: bool) -> torch.Tensor:
        dtype = x.dtype
        spatial = tuple(x.shape[1:])
        scaled = self._scaled_shape(spatial)
        if scaled != spatial:
            x = Resize(scaled, mode="nearest-exact" if is_label else "bilinear", dtype=torch.float32)(x)
        if self.crop_size is not None:
            if any(s < c for s, c in zip(scaled, self.crop_size)):
                value = self.label_pad_value if is_label else self.pad_value
                x = SpatialPad(self.crop_size, mode="constant", value=value)(x)
            end = [c0 + c for c0, c in zip(self._corner, self.crop_size)]
            x = SpatialCrop(roi_start=self._corner, roi_end=end)(x)
        if self._flip:
            x = Flip(spatial_axis=self.flip_axis)(x)
        if x.dtype != dtype:
            x = torch.round(x).to(dtype) if is_label and not dtype.is_floating_point else x.to(dtype)
        return x

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        shapes = {}
        for key in keys:
            x = d[key]
            if not isinstance(x, torch.Tensor) or x.ndim != 3:
                raise ValueError(
                    f"case {case_name(d)}: '{key}' must be a channel-first 2D tensor (C, H, W), got "
                    f"{tuple(x.shape) if hasattr(x, 'shape') else type(x).__name__}; load it with "
                    "ensure_channel_first=True (and EnsureTyped for numpy arrays)."
                )
            if key in self.label_keys:
                _check_label_map(x, key, d)
            shapes[key] = tuple(x.shape[1:])
        if len(set(shapes.values())) != 1:
            raise ValueError(
                f"case {case_name(d)}: the keys have different spatial shapes {shapes}; image, label and black-box "
                "prediction must be on one grid (resize them to one resolution first)."
            )
        self.randomize(shapes[keys[0]])
        for key in keys:
            d[key] = self._apply(d[key], key in self.label_keys)
        return d
