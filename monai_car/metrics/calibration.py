"""Expected calibration error with soft targets (mean of the graders), pixels pooled over images and iterations.

Two options serve the modified Cityscapes (the defaults keep the LIDC convention):

- ``binned_classes`` (MoSE's Cityscapes convention): only the pixels whose predicted class is one of these (the 10
  switchable classes) are binned, while the ECE's denominator stays every valid (non-void) pixel:
  ``ECE = sum_m |S_conf,m - S_acc,m| / N_valid``.
- ``zero_in_first_bin=False`` (Guo et al.'s bins taken literally): the right-closed bins ``((m - 1)/M, m/M]`` leave
  confidence 0 out of every bin, so such pixels are neither binned nor counted in the denominator. By default they
  go into the first bin, which matters for the mean of hard samples, where most pixels are exactly 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric

from monai_car.utils.validation import check_positive_int

from .utils import all_buffers, as_label_maps, as_plain_tensor, check_num_classes, in_classes

__all__ = [
    "SoftTargetCalibrationErrorMetric",
    "calibration_bin_sums",
    "calibration_pixel_totals",
    "calibration_error_from_bins",
    "compute_soft_target_calibration_bins",
    "compute_soft_target_calibration_error",
    "reliability_table_from_bins",
]

CONFIDENCE_MODES = ("foreground", "top_label")


def _check_bins_args(
    num_bins: int, confidence: str, binned_classes: Sequence[int] | None = None, zero_in_first_bin: bool = True
) -> list[int] | None:
    """Validate the binning options; return ``binned_classes`` as a list of ints (or None)."""
    check_positive_int(num_bins, "num_bins")
    if confidence not in CONFIDENCE_MODES:
        raise ValueError(f"confidence must be one of {CONFIDENCE_MODES}, got {confidence!r}.")
    if not isinstance(zero_in_first_bin, bool):
        raise ValueError(f"zero_in_first_bin must be True or False, got {zero_in_first_bin!r}.")
    if binned_classes is None:
        return None
    if confidence != "top_label":
        raise ValueError(
            "binned_classes selects pixels by their predicted class, so it needs confidence='top_label' "
            f"(got confidence={confidence!r})."
        )
    return check_num_classes(binned_classes, None)


def compute_soft_target_calibration_bins(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    num_bins: int = 10,
    confidence: str = "foreground",
    ignore_index: int | None = None,
    binned_classes: Sequence[int] | None = None,
    zero_in_first_bin: bool = True,
) -> torch.Tensor:
    """Per-image, per-bin sums of the reliability diagram: pixel count, summed confidence, summed soft accuracy.

    Bins: ``num_bins`` equal intervals of ``[0, 1]``, right-closed as in Guo et al. 2017,
    ``B_m = ((m - 1) / M, m / M]`` for ``m = 1 .. M``, the first bin also holding confidence 0 (by default; with
    ``zero_in_first_bin=False`` a pixel of confidence exactly 0 is in no bin).

    Conventions (``t`` is the soft target, the mean over the ``R`` graders):

    - ``confidence="foreground"`` (LIDC, binary): confidence = the predicted foreground probability ``p``
      (not ``max(p, 1 - p)``); accuracy of a pixel = ``t = mean_r y_r``, the fraction of graders who marked it. A bin's
      accuracy is the mean ``t`` of its pixels, i.e. the observed foreground frequency. ``y_pred`` is
      ``(B, 1, *spatial)`` (the foreground probability) or ``(B, 2, *spatial)`` (channel 1 is the foreground).
    - ``confidence="top_label"`` (multi-class, e.g. Cityscapes): confidence = ``max_k p_k``, the probability of the
      predicted class ``k* = argmax_k p_k`` (ties: lowest index); accuracy of a pixel = the soft target of the predicted
      class, ``t_{k*} = mean_r [y_r == k*]``, the fraction of graders who agree with the prediction (1 or 0 with a
      single label). A bin's accuracy is the mean of that over its pixels. ``y_pred`` is ``(B, K, *spatial)``,
      ``K >= 2``.

    Args:
        y_pred: ``(B, K, *spatial)`` probabilities in ``[0, 1]`` (channel-first, as MONAI's ``CalibrationErrorMetric``).
        y: ``(B, R, *spatial)`` the graders' labels: binary masks (foreground mode; soft labels in ``[0, 1]``, e.g.
            an already averaged ``(B, 1, *spatial)`` target, are accepted too) or integer label maps in ``[0, K)``
            (top-label mode); ``R >= 1``.
        num_bins: number of equal bins (10 in the papers).
        confidence: ``"foreground"`` or ``"top_label"``, see above.
        ignore_index: a label value marking pixels to leave out (e.g. Cityscapes void). A pixel is left out when any
            grader gives it this label.
        binned_classes: with ``confidence="top_label"``, bin only the pixels whose predicted class ``k*`` is one of
            these (MoSE's Cityscapes convention: the 10 switchable classes); their ECE takes the denominator of
            :func:`calibration_pixel_totals` (every valid pixel). None: every valid pixel is binned.
        zero_in_first_bin: whether confidence 0 goes into the first bin (default) or into none (Guo et al.'s
            right-closed bins; the ECE's denominator then leaves those pixels out too).

    Returns:
        ``(B, 3, num_bins)`` float64 on ``y_pred``'s device: row 0 the pixel counts, row 1 the summed confidences,
        row 2 the summed accuracies (soft targets). Sums, not means, so that they add up across images, iterations
        and DDP ranks.

    Raises:
        TypeError / ValueError: on non-tensors, wrong shapes or channel counts, probabilities outside ``[0, 1]``,
            labels outside the allowed values, bad ``num_bins`` or ``confidence``.
    """
    binned = _check_bins_args(num_bins, confidence, binned_classes, zero_in_first_bin)
    y_pred = as_plain_tensor(y_pred, "y_pred")
    y = as_plain_tensor(y, "y")
    if y_pred.ndim < 3 or y.ndim < 3:
        raise ValueError(
            f"y_pred must be (B, K, *spatial) and y (B, R, *spatial), got {tuple(y_pred.shape)} and {tuple(y.shape)}."
        )
    if y_pred.shape[0] != y.shape[0] or y_pred.shape[2:] != y.shape[2:]:
        raise ValueError(
            f"y_pred {tuple(y_pred.shape)} and y {tuple(y.shape)} must share the batch size and the spatial shape: "
            "(B, K, *spatial) probabilities and (B, R, *spatial) graders' labels."
        )
    if y.shape[1] == 0:
        raise ValueError("y holds no grader (dim 1 is 0).")
    if y_pred.device != y.device:
        raise ValueError(f"y_pred is on {y_pred.device} but y is on {y.device}; move both to the same device.")
    if not y_pred.is_floating_point():
        raise ValueError(f"y_pred must hold floating probabilities, got {y_pred.dtype}.")
    if not bool(((y_pred >= 0) & (y_pred <= 1)).all()):
        raise ValueError("y_pred must hold probabilities in [0, 1] (apply softmax/sigmoid first); found other values.")
    num_channels = y_pred.shape[1]
    if confidence == "foreground":
        if num_channels not in (1, 2):
            raise ValueError(
                "confidence='foreground' needs (B, 1, *spatial) or (B, 2, *spatial) probabilities, got "
                f"K={num_channels}; use confidence='top_label' for multi-class predictions."
            )
        conf = y_pred[:, -1]
        target, valid = _foreground_targets(y, ignore_index)
    else:
        if num_channels < 2:
            raise ValueError(f"confidence='top_label' needs K >= 2 class channels, got K={num_channels}.")
        conf, predicted = y_pred.max(dim=1)
        target, valid = _top_label_targets(y, predicted, num_channels, ignore_index)
        if binned is not None:
            valid = valid & in_classes(predicted, binned)
    return calibration_bin_sums(conf.double(), target, valid, num_bins, zero_in_first_bin)


def calibration_pixel_totals(y: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    """Per-image count of the valid pixels (no grader gives ``ignore_index``): the ECE denominator of
    ``binned_classes`` (MoSE's Cityscapes convention), where only some of these pixels are binned.

    Args:
        y: ``(B, R, *spatial)`` graders' labels.
        ignore_index: the void label, or None (every pixel is valid).

    Returns:
        ``(B,)`` float64 pixel counts.
    """
    y = as_plain_tensor(y, "y")
    if y.ndim < 3 or y.shape[1] == 0:
        raise ValueError(f"y must be (B, R, *spatial) graders' labels with R >= 1, got {tuple(y.shape)}.")
    return _valid_pixels(y, ignore_index).flatten(1).sum(dim=1).double()


def _valid_pixels(y: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """``(B, *spatial)`` bool: pixels that no grader marks with ``ignore_index``."""
    if ignore_index is None:
        return torch.ones_like(y[:, 0], dtype=torch.bool)
    return ~(y == ignore_index).any(dim=1)


def _foreground_targets(y: torch.Tensor, ignore_index: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft foreground target ``mean_r y_r`` and the valid pixels; ``y`` holds 0/1 masks or soft labels in [0, 1]."""
    y = y.long() if y.dtype == torch.bool else y
    valid = _valid_pixels(y, ignore_index)
    checked = y[valid[:, None].expand_as(y)]
    if not bool(((checked >= 0) & (checked <= 1)).all()):
        raise ValueError(
            "with confidence='foreground', y must hold the graders' binary masks (or soft labels in [0, 1]); "
            "set ignore_index to leave out void pixels."
        )
    return y.double().mean(dim=1), valid


def _top_label_targets(
    y: torch.Tensor, predicted: torch.Tensor, num_channels: int, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fraction of graders agreeing with the predicted class, and the valid pixels; ``y`` holds label maps."""
    labels = as_label_maps(y, "y")
    valid = _valid_pixels(labels, ignore_index)
    checked = labels[valid[:, None].expand_as(labels)]
    if not bool(((checked >= 0) & (checked < num_channels)).all()):
        raise ValueError(f"y must hold labels in [0, {num_channels - 1}] (or ignore_index={ignore_index}).")
    return (labels == predicted[:, None]).double().mean(dim=1), valid


def calibration_bin_sums(
    conf: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, num_bins: int, zero_in_first_bin: bool = True
) -> torch.Tensor:
    """``(B, 3, num_bins)`` float64 count / confidence / target sums of ``(B, *spatial)`` pixels, vectorised.

    Bins ``((m - 1)/M, m/M]``; confidence 0 goes into the first bin, or into none with ``zero_in_first_bin=False``.
    """
    if not zero_in_first_bin:
        valid = valid & (conf > 0)
    batch = conf.shape[0]
    inner_edges = torch.arange(1, num_bins, dtype=torch.float64, device=conf.device) / num_bins
    bin_index = torch.bucketize(conf.reshape(batch, -1), inner_edges, right=False)  # (lo, hi] bins, 0 in bin 0
    flat = (bin_index + num_bins * torch.arange(batch, device=conf.device)[:, None]).reshape(-1)
    weight = valid.reshape(-1).double()
    size = batch * num_bins
    count = torch.bincount(flat, weights=weight, minlength=size)
    sum_conf = torch.bincount(flat, weights=weight * conf.reshape(-1), minlength=size)
    sum_target = torch.bincount(flat, weights=weight * target.reshape(-1), minlength=size)
    return torch.stack([count, sum_conf, sum_target]).reshape(3, batch, num_bins).transpose(0, 1)


def _check_bin_sums(bins: torch.Tensor) -> torch.Tensor:
    bins = as_plain_tensor(bins, "bins")
    if bins.ndim < 2 or bins.shape[-2] != 3:
        raise ValueError(f"bins must be (..., 3, num_bins) count/confidence/target sums, got {tuple(bins.shape)}.")
    return bins.double().reshape(-1, 3, bins.shape[-1]).sum(dim=0)


def calibration_error_from_bins(bins: torch.Tensor, total: torch.Tensor | float | None = None) -> torch.Tensor:
    """Expected calibration error of pooled bin sums, ``ECE = sum_m (n_m / N) |conf_m - acc_m|``.

    Since ``n_m * |mean conf - mean acc| = |sum conf - sum acc|``, this is ``sum_m |S_conf,m - S_acc,m| / N``.

    Args:
        bins: ``(..., 3, num_bins)`` sums from :func:`compute_soft_target_calibration_bins`; all leading dims
            (images, iterations, ranks) are pooled by summation.
        total: the denominator ``N``: None (default) the binned pixels ``sum_m n_m``; or pixel counts to pool by
            summation (e.g. :func:`calibration_pixel_totals` with ``binned_classes``), at least the binned ones.

    Returns:
        0-dim float64 ECE in ``[0, 1]`` (multiply by 100 for percent); NaN when no pixel was counted.
    """
    count, sum_conf, sum_target = _check_bin_sums(bins)
    if total is None:
        total = count.sum()
    else:
        if isinstance(total, torch.Tensor):
            total = as_plain_tensor(total, "total")
        total = torch.as_tensor(total, dtype=torch.float64, device=count.device).sum()
        if not bool(torch.isfinite(total)) or total < count.sum() - 1e-6 * max(1.0, float(count.sum())):
            raise ValueError(
                f"total ({float(total)}) must be a finite pixel count of at least the {float(count.sum())} pixels "
                "binned; give the valid-pixel counts of calibration_pixel_totals."
            )
    if total <= 0:
        return torch.tensor(float("nan"), dtype=torch.float64, device=bins.device)
    return (sum_conf - sum_target).abs().sum() / total


def reliability_table_from_bins(bins: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reliability-diagram table of pooled bin sums.

    Args:
        bins: ``(..., 3, num_bins)`` sums; leading dims are pooled.

    Returns:
        A dict of float64 tensors: ``count`` (pixels per bin), ``mean_confidence``, ``accuracy`` (mean soft accuracy),
        ``gap`` (``mean_confidence - accuracy``: positive means over-confident), each ``(num_bins,)``, and
        ``bin_edges`` ``(num_bins + 1,)``. Empty bins have NaN mean confidence, accuracy and gap. The keys are those
        that :func:`monai_car.visualize.reliability.reliability_diagram_figure` reads.
    """
    count, sum_conf, sum_target = _check_bin_sums(bins)
    num_bins = count.shape[0]
    nan = torch.full_like(count, float("nan"))
    mean_conf = torch.where(count > 0, sum_conf / count.clamp_min(1e-300), nan)
    mean_acc = torch.where(count > 0, sum_target / count.clamp_min(1e-300), nan)
    return {
        "count": count,
        "mean_confidence": mean_conf,
        "accuracy": mean_acc,
        "gap": mean_conf - mean_acc,
        "bin_edges": torch.arange(num_bins + 1, dtype=torch.float64, device=count.device) / num_bins,
    }


def compute_soft_target_calibration_error(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    num_bins: int = 10,
    confidence: str = "foreground",
    ignore_index: int | None = None,
    binned_classes: Sequence[int] | None = None,
    zero_in_first_bin: bool = True,
) -> torch.Tensor:
    """ECE of one batch with all its pixels pooled (not a mean of per-image ECEs).

    See :func:`compute_soft_target_calibration_bins` for the arguments and conventions; use
    :class:`SoftTargetCalibrationErrorMetric` to pool over a whole test set. With ``binned_classes`` the
    denominator is every valid pixel (:func:`calibration_pixel_totals`), binned or not.

    Returns:
        0-dim float64 ECE in ``[0, 1]``.
    """
    bins = compute_soft_target_calibration_bins(
        y_pred, y, num_bins, confidence, ignore_index, binned_classes, zero_in_first_bin
    )
    total = None if binned_classes is None else calibration_pixel_totals(y, ignore_index)
    return calibration_error_from_bins(bins, total)


class SoftTargetCalibrationErrorMetric(CumulativeIterationMetric):
    """Pooled-pixel expected calibration error with soft targets, accumulated over iterations (the MoSE convention).

    Each call ``metric(y_pred=probs, y=graders)`` (``(B, K, *spatial)`` probabilities, ``(B, R, *spatial)`` graders'
    labels) adds the per-image bin sums ``(B, 3, num_bins)`` of :func:`compute_soft_target_calibration_bins` to the
    buffer and returns them. ``aggregate()`` gathers the buffers of all DDP ranks (``get_buffer``), sums the bin sums
    over every image and returns the ECE of the pooled pixels; ``reliability_table()`` returns the pooled per-bin
    table. Results are in ``[0, 1]``; papers report ``100 * ECE``.

    Args:
        num_bins: number of equal confidence bins (default 10).
        confidence: ``"foreground"`` (binary, the foreground probability) or ``"top_label"`` (the predicted class's
            probability); the exact accuracy conventions are in :func:`compute_soft_target_calibration_bins`.
        ignore_index: label value of pixels to leave out (any grader giving it).
        binned_classes: with ``confidence="top_label"``, bin only the pixels predicted as one of these classes, the
            ECE's denominator staying every valid pixel (MoSE's Cityscapes convention). None: bin every pixel.
        zero_in_first_bin: whether confidence 0 goes into the first bin (default) or into none (Guo et al.).
    """

    def __init__(
        self,
        num_bins: int = 10,
        confidence: str = "foreground",
        ignore_index: int | None = None,
        binned_classes: Sequence[int] | None = None,
        zero_in_first_bin: bool = True,
    ) -> None:
        super().__init__()
        self.binned_classes = _check_bins_args(num_bins, confidence, binned_classes, zero_in_first_bin)
        self.num_bins = num_bins
        self.confidence = confidence
        self.ignore_index = ignore_index
        self.zero_in_first_bin = zero_in_first_bin

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if y is None:
            raise ValueError("y (the graders' labels, (B, R, *spatial)) is required.")
        bins = compute_soft_target_calibration_bins(
            y_pred, y, self.num_bins, self.confidence, self.ignore_index, self.binned_classes, self.zero_in_first_bin
        )
        if self.binned_classes is None:
            return bins
        return bins, calibration_pixel_totals(y, self.ignore_index)

    def _pooled_bins(self) -> torch.Tensor:
        return all_buffers(self)[0].sum(dim=0)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """ECE of all pixels of all images seen so far on all ranks: 0-dim float64 in ``[0, 1]``."""
        buffers = all_buffers(self)
        total = buffers[1].sum() if self.binned_classes is not None else None
        return calibration_error_from_bins(buffers[0].sum(dim=0), total)

    def reliability_table(self) -> dict[str, torch.Tensor]:
        """Pooled reliability-diagram table, see :func:`reliability_table_from_bins`."""
        return reliability_table_from_bins(self._pooled_bins())
