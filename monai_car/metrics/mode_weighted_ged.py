"""GED^2 against a known, weighted set of ground-truth modes (the modified-Cityscapes convention)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from monai.utils import MetricReduction

from .generalized_energy_distance import GEDTermsMetric
from .pairwise_iou import pairwise_class_counts
from .utils import (
    as_label_maps,
    as_plain_tensor,
    check_num_classes,
    check_sample_sets,
    labels_from_probabilities,
)

__all__ = ["ModeWeightedGEDMetric", "compute_mode_weighted_ged", "compute_mode_weighted_ged_terms"]


def _class_averaged_distance(a: torch.Tensor, b: torch.Tensor | None, classes: list[int]) -> tuple[torch.Tensor, ...]:
    """``(d, kept)``, each ``(B, N, M)``: ``d = 1 - mean IoU`` over the classes present in a pair, ``kept`` if any."""
    inter, union = pairwise_class_counts(a, b, classes)  # (B, N, M, C)
    present = union > 0
    n_present = present.sum(dim=-1)
    iou_sum = torch.where(present, inter / union.clamp_min(1), torch.zeros_like(inter)).sum(dim=-1)
    kept = n_present > 0
    d = torch.where(kept, 1.0 - iou_sum / n_present.clamp_min(1), torch.zeros_like(iou_sum))
    return d.float(), kept


def _weighted_mean(d: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(w d) / sum(w)`` over the pair dims (1, 2); 0 where every weight is 0 (every pair left out)."""
    total = weights.sum(dim=(1, 2))
    return torch.where(total > 0, (weights * d).sum(dim=(1, 2)) / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)


def _check_weights(mode_weights: object, batch: int, num_modes: int, device: torch.device) -> torch.Tensor:
    """Return ``(B, N)`` float64 mode weights, or fail clearly."""
    if isinstance(mode_weights, torch.Tensor):
        w = as_plain_tensor(mode_weights, "mode_weights")
        if w.dtype == torch.bool or w.is_complex():
            raise ValueError(f"mode_weights must hold real numbers, got {w.dtype}.")
    else:
        try:
            w = torch.as_tensor(mode_weights, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"mode_weights must be a (N,) or (B, N) sequence of numbers, got {mode_weights!r}.") from e
    w = w.to(device=device, dtype=torch.float64)
    if w.shape == (num_modes,):
        w = w.expand(batch, num_modes)
    if w.shape != (batch, num_modes):
        raise ValueError(
            f"mode_weights must be (N,) or (B, N) = ({batch}, {num_modes}) to match the modes, got {tuple(w.shape)}."
        )
    if not bool((torch.isfinite(w) & (w >= 0)).all()):
        raise ValueError("mode_weights must be finite and non-negative.")
    if not bool((w.sum(dim=1) > 0).all()):
        raise ValueError("mode_weights must have a positive sum for every image.")
    return w


def _check_ignore_index(ignore_index: object, classes: list[int]) -> int | None:
    """``ignore_index`` as an int (or None), refusing a non-int or one of the compared classes."""
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise ValueError(f"ignore_index must be an int label (e.g. 24, Cityscapes void) or None, got {ignore_index!r}.")
    if int(ignore_index) in classes:
        raise ValueError(f"ignore_index {ignore_index} is one of the compared classes {classes}; void must not be.")
    return int(ignore_index)


def _drop_void(
    a: torch.Tensor, b: torch.Tensor, classes: list[int], ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relabel the ground-truth void pixels of ``(B, N, P)`` / ``(B, M, P)`` maps to a label outside ``classes``.

    A pixel is void when any mode gives it ``ignore_index``; it then counts in no per-class intersection or union of
    any pair (sample-mode, sample-sample, mode-mode), as if removed from the image.
    """
    if ignore_index is None:
        return a, b
    void = (b == ignore_index).any(dim=1, keepdim=True)  # (B, 1, P)
    outside = min(classes + [0]) - 1
    return a.masked_fill(void, outside), b.masked_fill(void, outside)


def compute_mode_weighted_ged_terms(
    y_pred: torch.Tensor,
    modes: torch.Tensor,
    mode_weights: torch.Tensor | Sequence[float],
    classes: Sequence[int],
    ignore_index: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three terms of the mode-weighted GED^2 per image (Kohl et al. 2018 appendix; CAR paper, Cityscapes).

    Distance: for label maps ``a, b``, ``d(a, b) = 1 - mean_{c in P} IoU_c(a, b)`` where ``P`` is the set of the given
    ``classes`` present in ``a`` or ``b`` (classes absent from both are skipped). A pair with ``P`` empty (none of the
    classes in either map) is *left out* of its expectation, which is renormalised over the pairs kept:

    - ``cross = sum_{s, y} w(y) k(s, y) d(s, y) / sum_{s, y} w(y) k(s, y)``,
    - ``samples = sum_{s, s'} k(s, s') d(s, s') / sum_{s, s'} k(s, s')`` (samples equally weighted),
    - ``modes = sum_{y, y'} w(y) w(y') k(y, y') d(y, y') / sum_{y, y'} w(y) w(y') k(y, y')``,

    with ``k`` the indicator of a kept pair and all ordered pairs, ``s = s'`` and ``y = y'`` included (V-statistic).
    The weights are renormalised, so they need not sum to 1.

    **Void** (Kohl et al.'s ``loss_mask``): with ``ignore_index`` set, a pixel that the image's ground truth marks
    void (any mode gives it ``ignore_index``) is removed from every pair, sample-mode, sample-sample and mode-mode,
    before the IoUs are counted: a sample's class there is neither a false positive nor a true positive. Without it
    (``None``, the earlier behaviour) such a pixel counts in the sample's class union, i.e. as a false positive.

    **A term whose pairs are all left out is 0** (no NaN): this happens only when no map of that term holds any of
    the classes, i.e. all its maps agree on "none of the classes here", the same as ``d = 0`` for two empty masks in
    the binary convention. E.g. if neither samples nor modes contain any class, GED^2 = 0.

    Args:
        y_pred: ``(B, S, *spatial)`` integer label maps, the model's samples.
        modes: ``(B, N, *spatial)`` integer label maps, the ground-truth modes (e.g. the 32 flip combinations).
        mode_weights: ``(B, N)`` or ``(N,)`` non-negative probabilities of the modes.
        classes: the class ids to compare (e.g. the 10 switchable classes: 5 originals + 5 copies). Other labels,
            void included, are not compared.
        ignore_index: the ground truth's void label (24 in monai-car's Cityscapes layout), whose pixels are dropped
            from every pair; ``None`` keeps every pixel. Must not be one of ``classes``.

    Returns:
        ``(cross, samples, modes)``, each ``(B,)`` float32 on the inputs' device.

    Raises:
        TypeError / ValueError: on non-tensors, shape/device mismatches, non-integral labels, bad classes or weights.
    """
    y_pred = as_plain_tensor(y_pred, "y_pred")
    modes = as_plain_tensor(modes, "modes")
    check_sample_sets(y_pred, modes, ("y_pred", "modes"))
    class_ids = check_num_classes(classes, None)
    w = _check_weights(mode_weights, modes.shape[0], modes.shape[1], modes.device)
    a = as_label_maps(y_pred, "y_pred").flatten(2)
    b = as_label_maps(modes, "modes").flatten(2)
    a, b = _drop_void(a, b, class_ids, _check_ignore_index(ignore_index, class_ids))

    d_sy, k_sy = _class_averaged_distance(a, b, class_ids)
    d_ss, k_ss = _class_averaged_distance(a, None, class_ids)
    d_yy, k_yy = _class_averaged_distance(b, None, class_ids)
    cross = _weighted_mean(d_sy.double(), k_sy * w[:, None, :])
    samples = _weighted_mean(d_ss.double(), k_ss.double())
    modes_term = _weighted_mean(d_yy.double(), k_yy * (w[:, :, None] * w[:, None, :]))
    return cross.float(), samples.float(), modes_term.float()


def compute_mode_weighted_ged(
    y_pred: torch.Tensor,
    modes: torch.Tensor,
    mode_weights: torch.Tensor | Sequence[float],
    classes: Sequence[int],
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Mode-weighted GED^2 per image: ``2 * cross - samples - modes`` of :func:`compute_mode_weighted_ged_terms`.

    Args:
        y_pred: ``(B, S, *spatial)`` integer label maps (samples).
        modes: ``(B, N, *spatial)`` integer label maps (ground-truth modes).
        mode_weights: ``(B, N)`` or ``(N,)`` mode probabilities.
        classes: the class ids the distance averages over (classes absent from both maps of a pair are skipped).
        ignore_index: the ground truth's void label, dropped from every pair (None: every pixel counts).

    Returns:
        ``(B,)`` float32 GED^2.
    """
    cross, samples, modes_term = compute_mode_weighted_ged_terms(y_pred, modes, mode_weights, classes, ignore_index)
    return 2.0 * cross - samples - modes_term


class ModeWeightedGEDMetric(GEDTermsMetric):
    """Accumulate the mode-weighted GED^2 per image over iterations; ``aggregate()`` returns the mean.

    Call as ``metric(y_pred=samples, y=modes, mode_weights=w)``: ``samples`` ``(B, S, *spatial)`` integer label maps
    (or, with ``from_probabilities=True``, ``(B, S, K, *spatial)`` probabilities, argmaxed over ``K``), ``modes``
    ``(B, N, *spatial)`` integer label maps, ``w`` ``(B, N)`` or ``(N,)``; ``mode_weights`` may be left out of the call
    when it was given to the constructor. With a list of per-image tensors, pass ``(N,)`` weights (they are shared
    by every image of the list).

    Args:
        classes: the class ids the distance averages over (Cityscapes: the 10 switchable classes).
        mode_weights: default ``(N,)`` mode probabilities, used when a call gives none.
        from_probabilities: whether ``y_pred`` holds probabilities instead of label maps.
        ignore_index: the ground truth's void label (Cityscapes: 24), dropped from every pair; None keeps every
            pixel (see :func:`compute_mode_weighted_ged_terms`).
        reduction: MONAI reduction of the per-image values in ``aggregate`` (default ``"mean"``).
        get_not_nans: if true, ``aggregate`` returns ``(value, number of non-NaN images)``.
    """

    term_names = ("ged", "cross", "samples", "modes")

    def __init__(
        self,
        classes: Sequence[int],
        mode_weights: torch.Tensor | Sequence[float] | None = None,
        from_probabilities: bool = False,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.classes = check_num_classes(classes, None)
        self.ignore_index = _check_ignore_index(ignore_index, self.classes)
        self.mode_weights = mode_weights
        self.from_probabilities = from_probabilities
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> list[torch.Tensor]:  # type: ignore[override]
        if y is None:
            raise ValueError("y (the ground-truth modes, (B, N, *spatial) label maps) is required.")
        unknown = set(kwargs) - {"mode_weights"}
        if unknown:
            raise ValueError(f"unexpected keyword arguments {sorted(unknown)}; only mode_weights is accepted.")
        weights = kwargs.get("mode_weights")
        if weights is None:
            weights = self.mode_weights
        if weights is None:
            raise ValueError("mode_weights is required: pass it to the call or to the constructor.")
        y_pred = as_plain_tensor(y_pred, "y_pred")
        if self.from_probabilities:
            y_pred = labels_from_probabilities(y_pred, None, binary=False)
        cross, samples, modes_term = compute_mode_weighted_ged_terms(
            y_pred, y, weights, self.classes, self.ignore_index
        )
        return [2.0 * cross - samples - modes_term, cross, samples, modes_term]
