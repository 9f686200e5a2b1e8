"""Loading the graders' masks of a case, and drawing one grader at random."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ImageReader, MetaTensor
from monai.transforms import LoadImage, MapTransform, Randomizable

from monai_car.utils.enums import CarKeys

from .utils import case_name, check_on_error, mark_invalid, non_binary_values, skip_reason

__all__ = ["LoadGradersd", "RandGraderd", "GraderCountError"]

_PAD_MODES = ("empty", "repeat", "error")
_TRUNCATE_MODES = ("first", "error")


class GraderCountError(ValueError):
    """A case has a number of graders that the pad/truncate policy does not allow."""


class _CaseError(ValueError):
    """A problem with one case's data (raised, or turned into a skip mark with ``on_error="skip"``)."""


def _as_affine(x: object) -> np.ndarray | None:
    affine = getattr(x, "affine", None)
    if affine is None:
        return None
    return np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=np.float64)


class LoadGradersd(MapTransform):
    """Load a case's grader masks (a list of paths) into one ``(R, *spatial)`` uint8 ``MetaTensor``.

    Every mask is read with MONAI's ``LoadImage`` (keeping its dtype), and the output carries the first mask's
    metadata (affine, file name). The transform checks, naming the case and the files:

    - every mask file can be read, and all masks share the first mask's shape and affine;
    - every mask is binary (0/1, any dtype; a non-binary mask is never cast silently);
    - when ``image_key`` already holds a loaded, channel-first image ``(C, *spatial)``, the masks' spatial shape
      equals the image's and, when both carry an affine, the affines agree (``atol`` in mm).

    Grader-count policy, when ``num_graders`` is set:

    - fewer masks than ``num_graders``: ``pad_mode="error"`` (the default) raises :class:`GraderCountError` naming
      the case and both counts. Padding is opt-in: ``"empty"`` appends all-zero masks (the LIDC convention: a
      grader who did not mark the nodule contributes an empty mask; the builders in ``preprocessing`` already write
      that empty mask, so their datalists never need padding), ``"repeat"`` cycles the existing graders
      (``0, 1, .., R-1, 0, ..``);
    - more masks: ``truncate_mode="first"`` keeps the first ``num_graders`` masks in datalist order, ``"error"``
      (the default) raises.

    With ``on_error="skip"`` a problem does not raise: the case is marked with
    :data:`~monai_car.transforms.utils.SKIP_REASON_KEY` (the reason, naming the case), so that the caller can drop
    and report it (before batching: :func:`monai_car.data.split_valid_cases`; after: the engines read the mark).
    So that a marked case still collates with the others, ``output_key`` is then written on a best-effort basis
    (masks binarised as ``!= 0``, the count fitted with ``pad_mode``/first-``num_graders``); its content must not be
    used. Only masks that cannot be stacked (unreadable, or graders of different shapes) leave ``output_key`` unset.

    Args:
        keys: the key holding the list of mask paths (one key).
        output_key: where to write the stacked masks.
        image_key: the image to check the masks against (skipped when absent or not loaded yet).
        num_graders: the number of graders to pad/truncate to; ``None`` keeps all of them.
        pad_mode: ``"error"`` (default), or, to pad explicitly, ``"empty"`` or ``"repeat"`` (see above).
        truncate_mode: ``"error"`` (default) or ``"first"`` (see above).
        reader: the MONAI image reader (name or instance); ``None`` lets ``LoadImage`` choose by file extension.
        atol: tolerance of the affine comparisons (mm).
        on_error: ``"raise"`` or ``"skip"``.
        keep_paths: keep the list of paths under ``keys``. By default it is removed once loaded (as ``LoadImaged``
            replaces a path by its image): lists of different lengths would not collate into a batch, and MONAI's
            collate transposes lists. The first mask's path stays in the output's ``meta["filename_or_obj"]``.
        allow_missing_keys: do not fail when ``keys`` is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = CarKeys.LABELS,
        output_key: Hashable = CarKeys.LABEL,
        image_key: Hashable | None = CarKeys.IMAGE,
        num_graders: int | None = None,
        pad_mode: str = "error",
        truncate_mode: str = "error",
        reader: ImageReader | str | None = None,
        atol: float = 1e-3,
        on_error: str = "raise",
        keep_paths: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"LoadGradersd takes one key (the list of mask paths), got {self.keys}.")
        if num_graders is not None and (isinstance(num_graders, bool) or int(num_graders) < 1):
            raise ValueError(f"num_graders must be a positive int or None, got {num_graders!r}.")
        if pad_mode not in _PAD_MODES:
            raise ValueError(f"pad_mode must be one of {_PAD_MODES}, got {pad_mode!r}.")
        if truncate_mode not in _TRUNCATE_MODES:
            raise ValueError(f"truncate_mode must be one of {_TRUNCATE_MODES}, got {truncate_mode!r}.")
        if atol < 0:
            raise ValueError(f"atol must be >= 0, got {atol}.")
        self.output_key = output_key
        self.image_key = image_key
        self.num_graders = None if num_graders is None else int(num_graders)
        self.pad_mode = pad_mode
        self.truncate_mode = truncate_mode
        self.atol = float(atol)
        self.on_error = check_on_error(on_error)
        self.keep_paths = keep_paths
        self._loader = LoadImage(reader=reader, image_only=True, dtype=None, ensure_channel_first=False)

    def _report(self, problems: list[str], message: str, error: type[ValueError] = _CaseError) -> None:
        """Raise ``message`` now (``on_error="raise"``), or collect it to mark the case (``"skip"``)."""
        if self.on_error == "raise":
            raise error(message)
        problems.append(message)

    def _load_one(self, name: str, grader: int, path: object, problems: list[str]) -> MetaTensor:
        if not isinstance(path, (str, Path)) or not str(path):
            raise _CaseError(f"case {name}: grader {grader} mask path {path!r} is not a file path.")
        if not Path(path).is_file():
            raise _CaseError(f"case {name}: grader {grader} mask {path} does not exist; rebuild the data set.")
        try:
            mask = self._loader(str(path))
        except Exception as e:  # reader errors: corrupt or unsupported file
            raise _CaseError(f"case {name}: cannot read grader {grader} mask {path}: {e}") from e
        bad = non_binary_values(mask)
        if bad:
            self._report(
                problems,
                f"case {name}: grader {grader} mask {path} is not binary (values such as {bad}); masks must hold "
                "0/1 only (threshold JPEG/PNG-derived masks at half their maximum when building the data set)",
            )
        return mask

    def _stack(self, name: str, paths: Sequence, image: object, problems: list[str]) -> MetaTensor:
        masks = [self._load_one(name, r, p, problems) for r, p in enumerate(paths)]
        first, first_affine = masks[0], _as_affine(masks[0])
        for r, (m, p) in enumerate(zip(masks[1:], paths[1:]), start=1):
            if m.shape != first.shape:  # cannot be stacked: an error even in skip mode's best-effort label
                raise _CaseError(
                    f"case {name}: grader {r} mask {p} has shape {tuple(m.shape)} but grader 0 mask {paths[0]} has "
                    f"{tuple(first.shape)}; all graders' masks must be on the same grid."
                )
            aff = _as_affine(m)
            if first_affine is not None and aff is not None and not np.allclose(aff, first_affine, atol=self.atol):
                self._report(
                    problems,
                    f"case {name}: grader {r} mask {p} has a different affine from grader 0 mask {paths[0]}:\n"
                    f"{aff}\nvs\n{first_affine}",
                )
        if isinstance(image, (torch.Tensor, np.ndarray)):
            spatial = tuple(image.shape[1:])
            if spatial != tuple(first.shape):
                self._report(
                    problems,
                    f"case {name}: the grader masks ({paths[0]}, ...) have shape {tuple(first.shape)} but the image "
                    f"{case_name({CarKeys.IMAGE: image})} has spatial shape {spatial} (channel-first image "
                    f"{tuple(image.shape)}); masks and image must be on the same grid (load the image with "
                    "ensure_channel_first=True)",
                )
            img_affine = _as_affine(image)
            if img_affine is not None and first_affine is not None and spatial == tuple(first.shape):
                if not np.allclose(img_affine, first_affine, atol=self.atol):
                    self._report(
                        problems,
                        f"case {name}: grader 0 mask {paths[0]} and the image have different affines (the masks "
                        f"would not overlay on the image):\n{first_affine}\nvs image\n{img_affine}",
                    )
        stacked = torch.stack([torch.as_tensor(m.as_tensor() if isinstance(m, MetaTensor) else m) for m in masks])
        stacked = (stacked != 0).to(torch.uint8)
        return MetaTensor(stacked, meta=dict(first.meta) if isinstance(first, MetaTensor) else None)

    def _fit_count(self, name: str, label: MetaTensor, problems: list[str]) -> MetaTensor:
        n, r = self.num_graders, label.shape[0]
        if n is None or r == n:
            return label
        if r > n:
            if self.truncate_mode == "error":
                self._report(
                    problems,
                    f"case {name} has {r} grader masks but num_graders={n}; list {n} masks per case in the "
                    "datalist's 'labels', or set num_graders to the data set's number of graders (--num_graders in "
                    f"the LIDC bundle), or keep the first {n} with truncate_mode='first' (LoadGradersd, the "
                    "transform presets)",
                    GraderCountError,
                )
            return label[:n]
        if self.pad_mode == "error":
            self._report(
                problems,
                f"case {name} has {r} grader masks but num_graders={n}; list {n} masks per case in the datalist's "
                "'labels' (an empty mask for each grader who did not mark the lesion, as the preprocessing builders "
                "write), or set num_graders to the data set's number of graders (--num_graders in the LIDC bundle), "
                "or pad explicitly with pad_mode='empty' (all-zero masks) or 'repeat' (LoadGradersd, the transform "
                "presets)",
                GraderCountError,
            )
        if self.pad_mode == "repeat":
            out = label.as_tensor()[[i % r for i in range(n)]]
        else:
            extra = torch.zeros((n - r, *label.shape[1:]), dtype=label.dtype)
            out = torch.cat([label.as_tensor(), extra])
        return MetaTensor(out, meta=dict(label.meta))

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            name = case_name(d)
            paths = d[key]
            problems: list[str] = []
            try:
                if isinstance(paths, (str, Path)) or not isinstance(paths, Sequence) or len(paths) == 0:
                    raise _CaseError(
                        f"case {name}: '{key}' must be a non-empty list of grader mask paths, got {paths!r}."
                    )
                image = d.get(self.image_key) if self.image_key is not None else None
                label = self._stack(name, list(paths), image, problems)
                d[self.output_key] = self._fit_count(name, label, problems)
            except _CaseError as e:
                if self.on_error == "raise":
                    raise
                d.pop(self.output_key, None)
                problems.append(str(e).rstrip("."))
            if problems:
                mark_invalid(d, "; ".join(problems))
            if not self.keep_paths:
                del d[key]
        return d


class RandGraderd(Randomizable, MapTransform):
    """Draw one grader uniformly at random: ``LABEL (R, *spatial) -> GRADER_LABEL (1, *spatial)``.

    The draw comes from the transform's own ``numpy`` ``RandomState`` (``set_random_state(seed)``, or through
    ``Compose.set_random_state``), so it is reproducible from one seed. The output keeps the input's metadata
    (it is a slice of the ``MetaTensor``). A case marked to be skipped (see :class:`LoadGradersd`) that has no
    ``keys`` passes unchanged.

    Args:
        keys: the key of the stacked graders (one key).
        output_key: where to write the drawn grader's mask.
        index_key: if given, also write the drawn grader's index (int) there.
        allow_missing_keys: do not fail when ``keys`` is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = CarKeys.LABEL,
        output_key: Hashable = CarKeys.GRADER_LABEL,
        index_key: Hashable | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"RandGraderd takes one key (the stacked graders), got {self.keys}.")
        self.output_key = output_key
        self.index_key = index_key
        self._index = 0

    def randomize(self, num_graders: int) -> None:
        """Draw the grader index in ``[0, num_graders)``."""
        self._index = int(self.R.randint(num_graders))

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        if skip_reason(d) and not any(k in d for k in self.keys):
            return d
        for key in self.key_iterator(d):
            label = d[key]
            if not isinstance(label, (torch.Tensor, np.ndarray)) or label.ndim < 2 or label.shape[0] < 1:
                raise ValueError(
                    f"case {case_name(d)}: '{key}' must be stacked graders (R, *spatial) with R >= 1, got "
                    f"{getattr(label, 'shape', type(label).__name__)}; load them with LoadGradersd."
                )
            self.randomize(label.shape[0])
            picked = label[self._index : self._index + 1]
            d[self.output_key] = picked.clone() if isinstance(picked, torch.Tensor) else picked.copy()
            if self.index_key is not None:
                d[self.index_key] = self._index
        return d
