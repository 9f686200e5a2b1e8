"""Fidelity of a stochastic segmenter's hard samples: are they label-like, and are their frequencies the graders'?

GED and HM-IoU reward a sample set that looks like the graders' set, but say little about *why* it differs: soft,
speckled samples, a lesion drawn too often or too rarely, or pixels marked with the wrong frequency. The fidelity
report measures those directly on **hard samples** (the argmax of each of G's ``S`` probability maps), per case:

- **sample sharpness**: the mean over samples of G's per-pixel entropy (nats) inside the case's *lesion window*, the
  pixels that any grader or any hard sample marks as foreground; averaged over the cases with a non-empty window.
  0 is a one-hot (label-like) sample, ``ln 2 = 0.69`` a coin flip.
- **lesion-presence calibration**: ``q`` = fraction of hard samples with any foreground, ``g`` = fraction of graders
  with any foreground; ECE over cases in ``presence_bins`` (5) equal bins of ``q``, with the reliability table. With
  ``R = 4`` graders ``g`` is itself a noisy estimate, so even a perfect model has a non-zero presence ECE: the
  *noise floor* is the ECE of a control whose ``S`` samples and ``R`` graders are drawn from a known per-case presence
  probability (the observed ``g`` of each case), averaged over Monte-Carlo repeats (mean and 95th percentile).
- **hard-sample pixel calibration**: confidence = fraction of hard samples marking a pixel, target = fraction of
  graders marking it, pixels pooled over the lesion windows of all cases, ``pixel_bins`` (10) equal bins; ECE and
  the reliability table.
- **F's fit**: the median, over the cases that every grader marked, of F's highest foreground probability in the
  case (near 1 when F has learned that a lesion all graders agree on is there).

Bins follow :func:`~monai_car.metrics.compute_soft_target_calibration_bins`: right-closed ``((m - 1)/M, m/M]`` with
confidence 0 in the first bin (a window pixel that graders mark but no sample does has confidence 0 and must count).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric

from monai_car.utils.validation import check_positive_int

from .calibration import calibration_bin_sums, calibration_error_from_bins, reliability_table_from_bins
from .utils import all_buffers, as_plain_tensor, probabilities_to_labels

__all__ = [
    "FIDELITY_KEYS",
    "FidelityMetric",
    "compute_fidelity_terms",
    "fidelity_from_terms",
    "presence_ece_noise_floor",
]

FIDELITY_KEYS = (
    "sample_sharpness",
    "presence_ece",
    "presence_ece_floor",
    "presence_ece_floor_p95",
    "hard_pixel_ece",
    "f_fit",
    "fidelity_cases",
    "f_fit_cases",
)
"""The keys :meth:`FidelityMetric.aggregate` returns (they land in the evaluator's ``engine.state.metrics``)."""

# columns of the per-case buffer
_SHARP, _WINDOW, _Q, _G, _FMAX, _R, _S = range(7)
_NUM_COLUMNS = 7
_EPS = 1e-12


def _check_bins(num_bins: int, name: str) -> None:
    check_positive_int(num_bins, name)


def compute_fidelity_terms(
    samples: torch.Tensor,
    labels: torch.Tensor,
    calibration_probs: torch.Tensor | None = None,
    pixel_bins: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-case terms of the fidelity report for one batch (summable across batches, images and DDP ranks).

    Args:
        samples: G's probabilities ``(B, S, K, *spatial)`` (``K = 2``: channel 1 is the foreground; ``K = 1``: the
            foreground probability). Hard samples are their argmax (``K = 1``: ``p >= 0.5``).
        labels: the graders' binary masks ``(B, R, *spatial)`` (bool or 0/1 numbers).
        calibration_probs: F's probabilities ``(B, K, *spatial)`` (channel -1 is the foreground), or None (then F's
            fit is NaN).
        pixel_bins: bins of the hard-sample pixel calibration.

    Returns:
        ``(per_case, pixel_bin_sums)``: ``per_case`` ``(B, 7)`` float64 with columns sharpness (mean entropy inside the
        window, NaN for an empty window), window pixel count, ``q``, ``g``, F's highest foreground probability (NaN
        without ``calibration_probs``), ``R`` and ``S``; ``pixel_bin_sums`` ``(B, 3, pixel_bins)`` count / confidence /
        target sums over the window pixels.

    Raises:
        TypeError / ValueError: on non-tensors, mismatched shapes, more than two classes, non-binary labels or
            probabilities outside ``[0, 1]``.
    """
    _check_bins(pixel_bins, "pixel_bins")
    samples = as_plain_tensor(samples, "samples")
    labels = as_plain_tensor(labels, "labels")
    if samples.ndim < 4 or labels.ndim != samples.ndim - 1:
        raise ValueError(
            f"samples must be (B, S, K, *spatial) and labels (B, R, *spatial), got {tuple(samples.shape)} and "
            f"{tuple(labels.shape)}."
        )
    b, s, k = samples.shape[:3]
    spatial = samples.shape[3:]
    if labels.shape[0] != b or labels.shape[2:] != spatial or labels.shape[1] < 1:
        raise ValueError(
            f"labels {tuple(labels.shape)} must be (B={b}, R >= 1, *{tuple(spatial)}) for samples "
            f"{tuple(samples.shape)}."
        )
    if k not in (1, 2):
        raise ValueError(f"the fidelity report compares binary masks: samples need K = 1 or 2 channels, got K = {k}.")
    if not samples.is_floating_point() or not bool(((samples >= 0) & (samples <= 1)).all()):
        raise ValueError("samples must hold probabilities in [0, 1] (G's softmax outputs).")
    if labels.dtype != torch.bool:
        if not bool(((labels == 0) | (labels == 1)).all()):
            raise ValueError("labels must be the graders' binary masks (0/1 or bool).")
        labels = labels != 0
    if labels.device != samples.device:
        raise ValueError(f"samples are on {samples.device} but labels on {labels.device}; move both to one device.")

    hard = probabilities_to_labels(samples) != 0  # (B, S, *spatial)
    window = labels.any(dim=1) | hard.any(dim=1)  # (B, *spatial)
    p = samples.double()
    if k == 1:
        p = torch.cat([1.0 - p, p], dim=2)
    ent = -(p * p.clamp_min(_EPS).log()).sum(dim=2).mean(dim=1)  # (B, *spatial): mean over samples
    flat_window = window.reshape(b, -1).double()
    n_window = flat_window.sum(dim=1)
    sharp_sum = (ent.reshape(b, -1) * flat_window).sum(dim=1)
    sharpness = torch.where(n_window > 0, sharp_sum / n_window.clamp_min(1), torch.full_like(n_window, math.nan))
    q = hard.reshape(b, s, -1).any(dim=2).double().mean(dim=1)
    g = labels.reshape(b, labels.shape[1], -1).any(dim=2).double().mean(dim=1)
    if calibration_probs is None:
        f_max = torch.full_like(q, math.nan)
    else:
        probs = as_plain_tensor(calibration_probs, "calibration_probs")
        if probs.shape[0] != b or probs.shape[2:] != spatial or probs.shape[1] != k:
            raise ValueError(f"calibration_probs must be (B={b}, K={k}, *{tuple(spatial)}), got {tuple(probs.shape)}.")
        f_max = probs[:, -1].reshape(b, -1).amax(dim=1).double()
    r_col = torch.full_like(q, float(labels.shape[1]))
    s_col = torch.full_like(q, float(s))
    per_case = torch.stack([sharpness, n_window, q, g, f_max, r_col, s_col], dim=1)
    confidence = hard.double().mean(dim=1)
    target = labels.double().mean(dim=1)
    return per_case, calibration_bin_sums(confidence, target, window, pixel_bins)


def presence_ece_noise_floor(
    presence_probability: torch.Tensor,
    num_graders: torch.Tensor | int,
    num_samples: torch.Tensor | int,
    num_bins: int = 5,
    repeats: int = 200,
    seed: int = 0,
) -> tuple[float, float]:
    """The presence ECE of a perfectly calibrated control: per case, ``S`` samples and ``R`` graders drawn
    independently from the same known presence probability.

    Args:
        presence_probability: ``(N,)`` per-case probabilities in ``[0, 1]`` (the report uses the graders' ``g``).
        num_graders: ``R`` per case (``(N,)``) or one int.
        num_samples: ``S`` per case (``(N,)``) or one int.
        num_bins: equal bins of the control's ``q``.
        repeats: Monte-Carlo repeats.
        seed: seed of the draws (the result is reproducible).

    Returns:
        ``(mean, 95th percentile)`` of the control's ECE over the repeats; NaN for no case.
    """
    _check_bins(num_bins, "num_bins")
    check_positive_int(repeats, "repeats")
    p = as_plain_tensor(presence_probability, "presence_probability").double().reshape(-1).cpu()
    if p.numel() == 0:
        return math.nan, math.nan
    if not bool(((p >= 0) & (p <= 1)).all()):
        raise ValueError("presence_probability must lie in [0, 1].")
    r = torch.as_tensor(num_graders, dtype=torch.float64).expand_as(p)
    s = torch.as_tensor(num_samples, dtype=torch.float64).expand_as(p)
    if bool((r < 1).any()) or bool((s < 1).any()):
        raise ValueError("num_graders and num_samples must be >= 1.")
    gen = torch.Generator().manual_seed(int(seed))
    pp = p.expand(repeats, -1)
    q = torch.binomial(s.expand(repeats, -1).contiguous(), pp.contiguous(), generator=gen) / s
    g = torch.binomial(r.expand(repeats, -1).contiguous(), pp.contiguous(), generator=gen) / r
    valid = torch.ones_like(q, dtype=torch.bool)
    bins = calibration_bin_sums(q, g, valid, num_bins)  # (repeats, 3, num_bins)
    ece = (bins[:, 1] - bins[:, 2]).abs().sum(dim=1) / bins[:, 0].sum(dim=1)
    return float(ece.mean()), float(torch.quantile(ece, 0.95))


def fidelity_from_terms(
    per_case: torch.Tensor,
    pixel_bin_sums: torch.Tensor,
    presence_bins: int = 5,
    floor_repeats: int = 200,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, dict[str, torch.Tensor]]]:
    """Reduce the per-case terms of :func:`compute_fidelity_terms` (any number of batches concatenated).

    Args:
        per_case: ``(N, 7)`` per-case terms.
        pixel_bin_sums: ``(N, 3, pixel_bins)`` (or already summed ``(3, pixel_bins)``) window-pixel bin sums.
        presence_bins: equal bins of ``q`` for the presence ECE.
        floor_repeats: Monte-Carlo repeats of the noise floor.
        seed: seed of the noise floor's draws.

    Returns:
        ``(values, tables)``: ``values`` maps :data:`FIDELITY_KEYS` to floats (ECEs as fractions, NaN where
        undefined); ``tables`` holds the reliability tables ``presence`` and ``hard_pixel``
        (:func:`~monai_car.metrics.reliability_table_from_bins`).
    """
    _check_bins(presence_bins, "presence_bins")
    per_case = as_plain_tensor(per_case, "per_case").double()
    if per_case.ndim != 2 or per_case.shape[1] != _NUM_COLUMNS:
        raise ValueError(
            f"per_case must be (N, {_NUM_COLUMNS}) terms of compute_fidelity_terms, got {tuple(per_case.shape)}."
        )
    q, g = per_case[:, _Q].contiguous(), per_case[:, _G].contiguous()
    sharp = per_case[:, _SHARP]
    has_window = ~torch.isnan(sharp)
    presence = calibration_bin_sums(q[None], g[None], torch.ones_like(q[None], dtype=torch.bool), presence_bins)[0]
    floor, floor_p95 = presence_ece_noise_floor(g, per_case[:, _R], per_case[:, _S], presence_bins, floor_repeats, seed)
    all_marked = g >= 1.0 - 1e-9
    f_max = per_case[all_marked, _FMAX]
    f_max = f_max[~torch.isnan(f_max)]
    values = {
        "sample_sharpness": float(sharp[has_window].mean()) if bool(has_window.any()) else math.nan,
        "presence_ece": float(calibration_error_from_bins(presence)) if per_case.shape[0] else math.nan,
        "presence_ece_floor": floor,
        "presence_ece_floor_p95": floor_p95,
        "hard_pixel_ece": float(calibration_error_from_bins(pixel_bin_sums)),
        "f_fit": float(torch.quantile(f_max, 0.5)) if f_max.numel() else math.nan,  # mean of the middle two
        "fidelity_cases": float(per_case.shape[0]),
        "f_fit_cases": float(f_max.numel()),
    }
    tables = {
        "presence": reliability_table_from_bins(presence),
        "hard_pixel": reliability_table_from_bins(pixel_bin_sums),
    }
    return values, tables


class FidelityMetric(CumulativeIterationMetric):
    """The fidelity report of a whole evaluation set, accumulated batch by batch (and across DDP ranks).

    Call it as ``metric(samples, labels, calibration_probs=probs)`` with G's ``(B, S, K, *spatial)`` probabilities, the
    graders' ``(B, R, *spatial)`` masks and F's ``(B, K, *spatial)`` probabilities; ``aggregate()`` returns the dict of
    :data:`FIDELITY_KEYS` (see the module docstring for the definitions), ``reliability_tables()`` the presence and
    hard-pixel tables.

    Args:
        num_samples: use only the first ``num_samples`` of the ``S`` samples (None: all).
        presence_bins: equal bins of the presence ECE (5).
        pixel_bins: equal bins of the hard-sample pixel ECE (10).
        floor_repeats: Monte-Carlo repeats of the presence noise floor.
        seed: seed of the noise floor.
    """

    def __init__(
        self,
        num_samples: int | None = None,
        presence_bins: int = 5,
        pixel_bins: int = 10,
        floor_repeats: int = 200,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_samples is not None:
            _check_bins(num_samples, "num_samples")
        _check_bins(presence_bins, "presence_bins")
        _check_bins(pixel_bins, "pixel_bins")
        self.num_samples, self.presence_bins, self.pixel_bins = num_samples, presence_bins, pixel_bins
        self.floor_repeats, self.seed = floor_repeats, seed

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if y is None:
            raise ValueError("y (the graders' masks, (B, R, *spatial)) is required.")
        samples = y_pred if self.num_samples is None else y_pred[:, : self.num_samples]
        return compute_fidelity_terms(samples, y, kwargs.get("calibration_probs"), self.pixel_bins)

    def report(self) -> tuple[dict[str, float], dict[str, dict[str, torch.Tensor]]]:
        """``(aggregate(), reliability_tables())`` from one reduction (the noise floor's Monte Carlo runs once)."""
        per_case, pixel = all_buffers(self)
        return fidelity_from_terms(per_case, pixel, self.presence_bins, self.floor_repeats, self.seed)

    def aggregate(self) -> dict[str, float]:  # type: ignore[override]
        """The fidelity figures of every case seen so far on all ranks (floats; ECEs as fractions)."""
        return self.report()[0]

    def reliability_tables(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{"presence": table, "hard_pixel": table}`` (see :func:`~monai_car.metrics.reliability_table_from_bins`)."""
        return self.report()[1]
