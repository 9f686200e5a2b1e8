"""Per-class calibration offsets where the flip probabilities are known (CAR paper, Figure 5 and appendix A.4).

On the modified Cityscapes each switchable class turns into its copy with a known probability ``p_i``, so the
calibration of F (its probability of the copy) and of G (the frequency of the copy among its samples) is measured
exactly per class: the *calibration offset* is ``|p_i - predicted probability|`` (the paper: F 1.6 % mean, 6 %
worst). Pixels are pooled over the whole evaluation set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric

from monai_car.utils.cityscapes_classes import COPY_IDS, COPY_NAMES, FLIP_PROBABILITIES, SWITCHABLE_TRAIN_IDS

from .known_distribution import check_flip_probabilities, check_label_map, check_switchable_layout
from .utils import all_buffers, as_label_maps, as_plain_tensor, in_classes, probabilities_to_labels

__all__ = ["CalibrationOffsetMetric", "calibration_offsets_from_sums", "compute_calibration_offset_sums"]

# columns of the per-image, per-class sums
_F_N, _F_SUM, _G_N, _G_COPY, _GT_N, _GT_COPY = range(6)
_NUM_COLUMNS = 6


def compute_calibration_offset_sums(
    y: torch.Tensor,
    calibration_probs: torch.Tensor | None = None,
    samples: torch.Tensor | None = None,
    black_box: torch.Tensor | None = None,
    switchable: Sequence[int] = SWITCHABLE_TRAIN_IDS,
    copies: Sequence[int] = COPY_IDS,
    normalize_f: bool = True,
    normalize_g: bool = False,
) -> torch.Tensor:
    """Per-image, per-switchable-class sums of the calibration offsets (CAR paper, Figure 5 and appendix A.4).

    For switchable class ``o = switchable[i]`` and its copy ``c = copies[i]``, with ``gt`` the (flipped) ground truth:

    - **F** (the calibration network's probabilities ``p``): over the pixels ``P_F`` where ``gt in {o, c}`` (and, when
      ``black_box`` is given, the black box also predicts ``o`` or ``c``: the paper's "overlap between the ground
      truth labels and the black-box predictions"), F's probability of the copy ``q = p_c / (p_o + p_c)``
      (``normalize_f``; pixels with ``p_o + p_c = 0`` are left out) or ``q = p_c`` (``normalize_f=False``). F's
      predicted probability is the pooled mean ``sum_{P_F} q / |P_F|``.
    - **G** (hard samples ``s_1 .. s_S``): over the pixels ``P_G`` where ``gt in {o, c}``, the empirical frequency of
      the copy ``sum_{P_G, k} [s_k = c] / (S |P_G|)``; with ``normalize_g``, among the samples predicting ``o`` or
      ``c`` only: ``sum [s_k = c] / sum [s_k in {o, c}]``.
    - the ground truth's own frequency of the copy on ``P_G``, ``sum [gt = c] / |P_G|`` (how far the flips drawn
      in the test set are from ``p_i``).

    Void pixels are never in ``P_F`` or ``P_G`` (void is not a switchable class). The calibration offset of the class
    is ``|p_i - predicted|`` (:func:`calibration_offsets_from_sums`).

    Args:
        y: ``(B, 1, *spatial)`` integer ground-truth label map (with the flips drawn for the image).
        calibration_probs: ``(B, K, *spatial)`` F's class probabilities, or ``None`` (F's columns stay 0).
        samples: ``(B, S, *spatial)`` integer label maps (G's hard samples), or ``None`` (G's columns stay 0).
        black_box: ``(B, 1, *spatial)`` label map or ``(B, K, *spatial)`` scores (argmaxed) of the black box, or
            ``None``: restricts F's pixels as above.
        switchable: the ``n`` original class ids (default Cityscapes trainIds 1, 11, 13, 8, 0).
        copies: the ``n`` copy ids, same order (default 19 .. 23).
        normalize_f: F's probability of the copy relative to the original + copy (default) or absolute.
        normalize_g: G's frequency among the samples predicting the original or the copy, or over all samples
            (default).

    Returns:
        ``(B, n, 6)`` float64 sums: F's pixel count and summed ``q``; G's denominator and copy count; the ground
        truth's pixel count on ``P_G`` and copy count. Sums add up over images, iterations and ranks.

    Raises:
        TypeError / ValueError: on non-tensors, mismatched shapes or devices, too few channels, non-integral labels.
    """
    switchable, copies = check_switchable_layout(switchable, copies)
    y = check_label_map(y, "y")
    batch, spatial = y.shape[0], y.shape[2:]
    gt = y[:, 0]
    need = max(switchable + copies) + 1
    sums = torch.zeros(batch, len(switchable), _NUM_COLUMNS, dtype=torch.float64, device=y.device)

    def check_like_y(x: torch.Tensor, name: str, what: str) -> torch.Tensor:
        x = as_plain_tensor(x, name)
        if x.ndim != y.ndim or x.shape[0] != batch or x.shape[2:] != spatial:
            raise ValueError(f"{name} must be {what} on the grid of y {tuple(y.shape)}, got {tuple(x.shape)}.")
        if x.device != y.device:
            raise ValueError(f"{name} is on {x.device} but y is on {y.device}; move both to the same device.")
        return x

    probs = None
    if calibration_probs is not None:
        probs = check_like_y(calibration_probs, "calibration_probs", "(B, K, *spatial) probabilities")
        if not probs.is_floating_point() or probs.shape[1] < need:
            raise ValueError(
                f"calibration_probs must be floating (B, K, *spatial) probabilities with K >= {need} (the copies' "
                f"channels), got {probs.dtype} with K = {probs.shape[1]}."
            )
        if not bool(((probs >= 0) & (probs <= 1)).all()):
            raise ValueError("calibration_probs must hold probabilities in [0, 1] (apply softmax first).")
    bb = None
    if black_box is not None:
        bb = check_like_y(black_box, "black_box", "a (B, 1, *spatial) label map or (B, K, *spatial) scores")
        bb = as_label_maps(bb, "black_box")[:, 0] if bb.shape[1] == 1 else bb.argmax(dim=1)
    hard = None
    if samples is not None:
        hard = check_like_y(samples, "samples", "(B, S, *spatial) label maps")
        if hard.shape[1] == 0:
            raise ValueError("samples holds no sample (dim 1 is 0).")
        hard = as_label_maps(hard, "samples")
    for i, (o, c) in enumerate(zip(switchable, copies)):
        mask_g = in_classes(gt, [o, c])  # (B, *spatial)
        sums[:, i, _GT_N] = mask_g.flatten(1).sum(dim=1).double()
        sums[:, i, _GT_COPY] = (gt == c).flatten(1).sum(dim=1).double()
        if probs is not None:
            mask_f = mask_g if bb is None else mask_g & in_classes(bb, [o, c])
            p_o, p_c = probs[:, o].double(), probs[:, c].double()
            if normalize_f:
                pair = p_o + p_c
                mask_f = mask_f & (pair > 0)
                q = p_c / pair.clamp_min(torch.finfo(torch.float64).tiny)
            else:
                q = p_c
            sums[:, i, _F_N] = mask_f.flatten(1).sum(dim=1).double()
            sums[:, i, _F_SUM] = torch.where(mask_f, q, 0.0).flatten(1).sum(dim=1)
        if hard is not None:
            is_copy = (hard == c) & mask_g[:, None]
            sums[:, i, _G_COPY] = is_copy.flatten(1).sum(dim=1).double()
            if normalize_g:
                sums[:, i, _G_N] = (in_classes(hard, [o, c]) & mask_g[:, None]).flatten(1).sum(dim=1).double()
            else:
                sums[:, i, _G_N] = sums[:, i, _GT_N] * hard.shape[1]
    return sums


def calibration_offsets_from_sums(
    sums: torch.Tensor, flip_probabilities: Sequence[float] = FLIP_PROBABILITIES
) -> dict[str, torch.Tensor]:
    """Pooled per-class predicted probabilities and calibration offsets from :func:`compute_calibration_offset_sums`.

    Args:
        sums: ``(..., n, 6)`` sums; all leading dims (images, iterations, ranks) are pooled by summation.
        flip_probabilities: ``(n,)`` true flip probabilities (default 8/17 .. 4/17).

    Returns:
        float64 tensors: ``true``, ``observed`` (the ground truth's copy frequency), ``f_predicted``,
        ``g_predicted``, ``f_offset``, ``g_offset`` (``|true - predicted|``), ``f_pixels``, ``g_pixels`` (the pooled
        pixel counts of ``P_F`` and ``P_G``), each ``(n,)``; ``f_offset_mean``, ``f_offset_worst`` (max),
        ``g_offset_mean``, ``g_offset_worst``, each 0-dim. A class without any pixel has NaN values and is left out
        of the mean and worst; those are NaN when no class has a pixel (e.g. F's when no F probabilities were given).
    """
    sums = as_plain_tensor(sums, "sums")
    if sums.ndim < 2 or sums.shape[-1] != _NUM_COLUMNS:
        raise ValueError(f"sums must be (..., n, {_NUM_COLUMNS}) calibration-offset sums, got {tuple(sums.shape)}.")
    pooled = sums.double().reshape(-1, *sums.shape[-2:]).sum(dim=0)  # (n, 6)
    true = check_flip_probabilities(flip_probabilities, pooled.shape[0]).to(pooled.device)
    nan = torch.full_like(true, float("nan"))

    def ratio(num: int, den: int) -> torch.Tensor:
        return torch.where(pooled[:, den] > 0, pooled[:, num] / pooled[:, den].clamp_min(1e-300), nan)

    out = {
        "true": true,
        "observed": ratio(_GT_COPY, _GT_N),
        "f_predicted": ratio(_F_SUM, _F_N),
        "g_predicted": ratio(_G_COPY, _G_N),
        "f_pixels": pooled[:, _F_N],
        "g_pixels": pooled[:, _GT_N],
    }
    for net in ("f", "g"):
        offset = (true - out[f"{net}_predicted"]).abs()
        out[f"{net}_offset"] = offset
        kept = offset[~torch.isnan(offset)]
        empty = torch.tensor(float("nan"), dtype=torch.float64, device=true.device)
        out[f"{net}_offset_mean"] = kept.mean() if kept.numel() else empty
        out[f"{net}_offset_worst"] = kept.max() if kept.numel() else empty
    return out


class CalibrationOffsetMetric(CumulativeIterationMetric):
    """Per-class calibration offsets of F and G over a whole evaluation set, pooled over pixels (and DDP ranks).

    Call it as ``metric(y_pred=samples, y=label, calibration_probs=probs, black_box=bb)``, like
    :class:`~monai_car.metrics.FidelityMetric`: ``samples`` G's ``(B, S, K, *spatial)`` probabilities (argmaxed into
    hard samples; ``(B, S, *spatial)`` label maps with ``from_probabilities=False``), ``label`` the ``(B, 1,
    *spatial)`` ground truth, ``probs`` F's ``(B, K, *spatial)`` probabilities (optional), ``bb`` the black box's
    prediction (optional, see :func:`compute_calibration_offset_sums` for every definition).

    ``aggregate()`` returns floats: ``f_offset_mean``, ``f_offset_worst``, ``g_offset_mean``, ``g_offset_worst`` and,
    per class, ``f_offset_<name>``, ``g_offset_<name>``, ``f_predicted_<name>`` and ``g_predicted_<name>`` (fractions;
    NaN when not measured); ``report()`` the tensors of :func:`calibration_offsets_from_sums`.

    Args:
        switchable: the ``n`` original class ids (default Cityscapes trainIds 1, 11, 13, 8, 0).
        copies: the ``n`` copy ids (default 19 .. 23).
        flip_probabilities: the true flip probabilities (default 8/17 .. 4/17).
        class_names: a name per class for the keys; default: "sidewalk2", "person2", "car2", "vegetation2", "road2"
            for the default copies, ``copy<id>`` for other copies.
        num_samples: use only the first ``num_samples`` samples (None: all; the paper uses 16).
        from_probabilities: whether ``y_pred`` holds G's probabilities (default) or label maps.
        normalize_f, normalize_g: see :func:`compute_calibration_offset_sums`.
    """

    def __init__(
        self,
        switchable: Sequence[int] = SWITCHABLE_TRAIN_IDS,
        copies: Sequence[int] = COPY_IDS,
        flip_probabilities: Sequence[float] = FLIP_PROBABILITIES,
        class_names: Sequence[str] | None = None,
        num_samples: int | None = None,
        from_probabilities: bool = True,
        normalize_f: bool = True,
        normalize_g: bool = False,
    ) -> None:
        super().__init__()
        self.switchable, self.copies = check_switchable_layout(switchable, copies)
        self.flip_probabilities = check_flip_probabilities(flip_probabilities, len(self.switchable)).tolist()
        if class_names is None:
            class_names = COPY_NAMES if tuple(self.copies) == COPY_IDS else [f"copy{c}" for c in self.copies]
        if isinstance(class_names, str) or len(class_names) != len(self.switchable):
            raise ValueError(f"class_names must give one name per switchable class ({len(self.switchable)}).")
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names must be distinct, got {list(class_names)}.")
        self.class_names = [str(n) for n in class_names]
        if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int)):
            raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}.")
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}.")
        self.num_samples = num_samples
        self.from_probabilities, self.normalize_f, self.normalize_g = from_probabilities, normalize_f, normalize_g

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        if y is None:
            raise ValueError("y (the ground truth, (B, 1, *spatial) label maps) is required.")
        unknown = set(kwargs) - {"calibration_probs", "black_box"}
        if unknown:
            raise ValueError(f"unexpected keyword arguments {sorted(unknown)}; accepted: calibration_probs, black_box.")
        samples = as_plain_tensor(y_pred, "y_pred")
        if self.num_samples is not None:
            samples = samples[:, : self.num_samples]
        if self.from_probabilities:
            samples = probabilities_to_labels(samples)
        return compute_calibration_offset_sums(
            y,
            kwargs.get("calibration_probs"),
            samples,
            kwargs.get("black_box"),
            self.switchable,
            self.copies,
            self.normalize_f,
            self.normalize_g,
        )

    def report(self) -> dict[str, torch.Tensor]:
        """The pooled tensors of :func:`calibration_offsets_from_sums` over every image seen on all ranks."""
        return calibration_offsets_from_sums(all_buffers(self)[0], self.flip_probabilities)

    def aggregate(self) -> dict[str, float]:  # type: ignore[override]
        """Mean, worst and per-class offsets of F and G, and their per-class predicted copy probabilities
        (``f_predicted_<name>``, ``g_predicted_<name>``), as floats (fractions; multiply by 100 for percent)."""
        r = self.report()
        out = {f"{net}_offset_{k}": float(r[f"{net}_offset_{k}"]) for net in ("f", "g") for k in ("mean", "worst")}
        for kind in ("offset", "predicted"):
            for net in ("f", "g"):
                values = r[f"{net}_{kind}"]
                out.update({f"{net}_{kind}_{name}": float(v) for name, v in zip(self.class_names, values)})
        return out
