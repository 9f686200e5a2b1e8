"""Calibration and sharpness against a KNOWN per-pixel distribution (the modified Cityscapes and its synthetic twin).

With the unflipped label map ``y`` and the flip probabilities ``p_i`` known, a pixel of switchable class ``o_i`` is
``o_i`` with probability ``1 - p_i`` and its copy ``c_i`` with ``p_i``; every other pixel is its label. So the soft
target of any prediction is exact, not estimated from a few graders: :func:`known_distribution_targets`.

:class:`KnownDistributionCalibrationMetric` accumulates, over an evaluation set:

- the top-label ECE of F's probabilities and of the hard samples' mean (the empirical distribution of ``S`` argmaxed
  samples), each with these soft targets, 10 right-closed bins ``((m-1)/M, m/M]`` (Guo et al.), and MoSE's Cityscapes
  convention when ``binned_classes`` is given: only pixels predicted as one of those classes are binned, the
  denominator is every valid pixel;
- the sample sharpness: the mean over samples of G's per-pixel entropy (nats) over the pixels of the switchable
  classes, where the true distribution is two-valued and a soft sample would show (0: label-like).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric

from monai_car.utils.cityscapes_classes import COPY_IDS, FLIP_PROBABILITIES, SWITCHABLE_TRAIN_IDS

from .calibration import calibration_bin_sums, calibration_error_from_bins, reliability_table_from_bins
from .known_distribution import check_flip_probabilities, check_label_map, check_switchable_layout, unflip_label
from .utils import all_buffers, as_plain_tensor, in_classes, probabilities_to_labels

__all__ = ["KnownDistributionCalibrationMetric", "known_distribution_targets"]


def known_distribution_targets(
    predicted: torch.Tensor,
    label: torch.Tensor,
    switchable: Sequence[int] = SWITCHABLE_TRAIN_IDS,
    copies: Sequence[int] = COPY_IDS,
    flip_probabilities: Sequence[float] = FLIP_PROBABILITIES,
) -> torch.Tensor:
    """The true probability of each pixel's predicted class.

    Args:
        predicted: ``(B, *spatial)`` integer predicted classes.
        label: ``(B, 1, *spatial)`` integer label map (flipped or not: copies are mapped back to their originals).
        switchable, copies, flip_probabilities: the flip layout (default: the modified Cityscapes').

    Returns:
        ``(B, *spatial)`` float64: ``1 - p_i`` where the label is ``o_i`` and ``o_i`` is predicted, ``p_i`` where the
        label is ``o_i`` and ``c_i`` is predicted, else ``[predicted == label]``.
    """
    switchable, copies = check_switchable_layout(switchable, copies)
    probs = check_flip_probabilities(flip_probabilities, len(switchable))
    gt = unflip_label(label, switchable, copies)[:, 0]
    predicted = as_plain_tensor(predicted, "predicted")
    if predicted.shape != gt.shape:
        raise ValueError(
            f"predicted {tuple(predicted.shape)} must be on the label's grid (B, *spatial) = {tuple(gt.shape)}."
        )
    target = (predicted == gt).double()
    for original, copy, p in zip(switchable, copies, probs.tolist()):
        on_class = gt == original
        target = torch.where(on_class & (predicted == original), 1.0 - p, target)
        target = torch.where(on_class & (predicted == copy), p, target)
    return target


class KnownDistributionCalibrationMetric(CumulativeIterationMetric):
    """ECE of F and of the hard samples against the known distribution, and the samples' sharpness.

    Call as ``metric(y_pred=samples, y=label, calibration_probs=probs)``: ``samples`` G's ``(B, S, K, *spatial)``
    probabilities, ``label`` the ``(B, 1, *spatial)`` label map, ``probs`` F's ``(B, K, *spatial)`` probabilities.
    ``aggregate()`` returns floats ``ece_calibration`` (F), ``ece_samples`` (the hard samples' mean; fractions, not
    percent) and ``sample_sharpness`` (nats); :meth:`reliability_tables` the pooled tables ``"calibration"`` and
    ``"samples"``.

    Args:
        switchable, copies, flip_probabilities: the flip layout.
        ignore_index: the void label (left out everywhere), or None.
        num_bins: ECE bins (10).
        binned_classes: MoSE's convention (bin only pixels predicted as one of these; default: the switchable
            classes and their copies); ``()`` bins every valid pixel.
        num_samples: use only the first ``num_samples`` samples (None: all).
    """

    def __init__(
        self,
        switchable: Sequence[int] = SWITCHABLE_TRAIN_IDS,
        copies: Sequence[int] = COPY_IDS,
        flip_probabilities: Sequence[float] = FLIP_PROBABILITIES,
        ignore_index: int | None = None,
        num_bins: int = 10,
        binned_classes: Sequence[int] | None = None,
        num_samples: int | None = None,
    ) -> None:
        super().__init__()
        self.switchable, self.copies = check_switchable_layout(switchable, copies)
        self.flip_probabilities = check_flip_probabilities(flip_probabilities, len(self.switchable)).tolist()
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
            raise ValueError(f"num_bins must be a positive int, got {num_bins!r}.")
        if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int)):
            raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}.")
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}.")
        self.ignore_index = ignore_index
        self.num_bins = num_bins
        self.binned_classes = list(self.switchable + self.copies if binned_classes is None else binned_classes)
        self.num_samples = num_samples

    def _bins(self, probs: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        conf, predicted = probs.double().max(dim=1)
        target = known_distribution_targets(predicted, label, self.switchable, self.copies, self.flip_probabilities)
        binned = valid & in_classes(predicted, self.binned_classes) if self.binned_classes else valid
        return calibration_bin_sums(conf, target, binned, self.num_bins, zero_in_first_bin=False)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> list[torch.Tensor]:  # type: ignore[override]
        if y is None:
            raise ValueError("y (the label map, (B, 1, *spatial)) is required.")
        unknown = set(kwargs) - {"calibration_probs"}
        if unknown:
            raise ValueError(f"unexpected keyword arguments {sorted(unknown)}; accepted: calibration_probs.")
        label = check_label_map(y, "y")
        samples = as_plain_tensor(y_pred, "y_pred")
        if samples.ndim != label.ndim + 1 or samples.shape[0] != label.shape[0] or samples.shape[3:] != label.shape[2:]:
            raise ValueError(
                f"y_pred must be G's probabilities (B, S, K, *spatial) on the label's grid {tuple(label.shape)}, got "
                f"{tuple(samples.shape)}."
            )
        if self.num_samples is not None:
            samples = samples[:, : self.num_samples]
        b, s, k = samples.shape[:3]
        if k <= max(self.switchable + self.copies):
            top = max(self.switchable + self.copies)
            raise ValueError(f"y_pred has K = {k} channels, too few for the classes up to {top}.")
        valid = torch.ones_like(label[:, 0], dtype=torch.bool)
        if self.ignore_index is not None:
            valid = label[:, 0] != self.ignore_index
        hard = probabilities_to_labels(samples)  # (B, S, *spatial)
        frequencies = torch.nn.functional.one_hot(hard, k).movedim(-1, 2).double().mean(dim=1)  # (B, K, *spatial)
        bins_g = self._bins(frequencies, label, valid)
        probs = kwargs.get("calibration_probs")
        if probs is None:
            bins_f = torch.zeros_like(bins_g)
        else:
            probs = as_plain_tensor(probs, "calibration_probs")
            if probs.shape != (b, k, *label.shape[2:]):
                expected = (b, k, *label.shape[2:])
                raise ValueError(f"calibration_probs must be (B, K, *spatial) = {expected}, got {tuple(probs.shape)}.")
            bins_f = self._bins(probs, label, valid)
        totals = valid.flatten(1).sum(dim=1).double()
        region = (in_classes(unflip_label(label, self.switchable, self.copies)[:, 0], self.switchable) & valid).double()
        p = samples.double().clamp_min(1e-12)
        entropy = -(p * p.log()).sum(dim=2).mean(dim=1)  # (B, *spatial): mean over samples of the per-pixel entropy
        sharp = torch.stack([(entropy * region).flatten(1).sum(dim=1), region.flatten(1).sum(dim=1)], dim=1)
        return [bins_f, bins_g, totals, sharp]

    def aggregate(self) -> dict[str, float]:  # type: ignore[override]
        """``ece_calibration``, ``ece_samples`` (fractions) and ``sample_sharpness`` (nats) over all images seen."""
        bins_f, bins_g, totals, sharp = all_buffers(self)
        total = totals.sum() if self.binned_classes else None
        pooled = sharp.sum(dim=0)

        def ece(bins: torch.Tensor) -> float:
            bins = bins.sum(dim=0)
            return float(calibration_error_from_bins(bins, total)) if bins[0].sum() > 0 else float("nan")

        return {
            "ece_calibration": ece(bins_f),
            "ece_samples": ece(bins_g),
            "sample_sharpness": float(pooled[0] / pooled[1]) if pooled[1] > 0 else float("nan"),
        }

    def reliability_tables(self) -> dict[str, dict[str, torch.Tensor]]:
        """Pooled reliability tables of F (``"calibration"``) and of the hard samples' mean (``"samples"``)."""
        bins_f, bins_g = all_buffers(self)[:2]
        return {
            "calibration": reliability_table_from_bins(bins_f.sum(dim=0)),
            "samples": reliability_table_from_bins(bins_g.sum(dim=0)),
        }
