"""Generalized energy distance (GED^2) between a model's samples and the graders' labels, per image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric
from monai.utils import MetricReduction

from .pairwise_iou import (
    count_dtype,
    crop_label_maps,
    iou_from_counts,
    pairwise_class_counts,
    pairwise_intersection_union,
)
from .utils import (
    all_buffers,
    as_binary_masks,
    as_label_maps,
    as_plain_tensor,
    check_num_classes,
    check_sample_sets,
    crop_to_foreground,
    labels_from_probabilities,
    reduce_per_image,
)

__all__ = [
    "GEDTermsMetric",
    "GeneralizedEnergyDistanceMetric",
    "compute_ged_terms",
    "compute_generalized_energy_distance",
]


def _pairwise_distance(
    a: torch.Tensor, b: torch.Tensor | None, classes: list[int] | None, dtype: torch.dtype
) -> torch.Tensor:
    """``(B, N, M)`` distances of flattened inputs: ``1 - IoU`` (binary) or its mean over ``classes`` (label maps),
    counted in ``dtype``."""
    if classes is None:
        return 1.0 - iou_from_counts(*pairwise_intersection_union(a, b, dtype))
    return (1.0 - iou_from_counts(*pairwise_class_counts(a, b, classes, dtype))).mean(dim=-1)


def compute_ged_terms(
    y_pred: torch.Tensor, y: torch.Tensor, num_classes: int | None = None, classes: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three expectations of the generalized energy distance, per image (V-statistics).

    With ``d = 1 - IoU`` (``d = 0`` when both masks are empty), the terms are the means over *all* ordered pairs,
    the pairs of a mask with itself included:

    - ``cross = mean_{s, r} d(s_s, y_r)`` over ``S x R`` pairs,
    - ``samples = mean_{s, s'} d(s_s, s_s')`` over ``S x S`` pairs (diversity of the samples),
    - ``labels = mean_{r, r'} d(y_r, y_r')`` over ``R x R`` pairs (diversity of the graders),

    and ``GED^2 = 2 * cross - samples - labels``.

    Only the window of each image that holds all the foreground of its samples and labels is counted: outside it
    every mask is empty, which adds to no intersection or union, so the terms are exactly those over the whole image
    (computed several times faster on small lesions). With label maps this holds for the foreground ``classes``;
    when ``classes`` includes the background 0, nothing is cropped.

    Binary mode (``num_classes=None``): the inputs are binary masks (bool or 0/1 of any dtype).
    Label-map mode (``num_classes=K``): the inputs are integer label maps in ``[0, K)`` and ``d`` is the mean over
    ``classes`` (default: the foreground classes ``1 .. K-1``) of the per-class ``1 - IoU_c``, where a class absent from
    both maps contributes ``d_c = 0`` (it is *not* skipped; for the Cityscapes convention that skips absent classes,
    use :func:`~monai_car.metrics.compute_mode_weighted_ged`).

    Args:
        y_pred: ``(B, S, *spatial)`` model samples.
        y: ``(B, R, *spatial)`` graders' labels, same batch size, spatial shape and device.
        num_classes: ``None`` for binary masks, or the number of classes ``K >= 2`` of integer label maps.
        classes: with ``num_classes``, the class ids to average ``d`` over. Not allowed without ``num_classes``.

    Returns:
        ``(cross, samples, labels)``, each a ``(B,)`` float32 tensor on the inputs' device.

    Raises:
        TypeError: when an input is not a tensor.
        ValueError: on shape/device mismatches, non-binary masks, non-integral or out-of-range labels, bad classes.
    """
    y_pred = as_plain_tensor(y_pred, "y_pred")
    y = as_plain_tensor(y, "y")
    check_sample_sets(y_pred, y, ("y_pred", "y"))
    dtype = count_dtype(y.shape[2:].numel())  # of the whole image: the same precision with or without the crop
    if num_classes is None:
        if classes is not None:
            raise ValueError("classes is only used with integer label maps: set num_classes as well.")
        class_ids = None
        a, b = crop_to_foreground(as_binary_masks(y_pred, "y_pred"), as_binary_masks(y, "y"))
        a, b = a.flatten(2).to(dtype), b.flatten(2).to(dtype)  # converted once, reused by the cross and self pairs
    else:
        class_ids = check_num_classes(classes, num_classes)
        a = as_label_maps(y_pred, "y_pred", num_classes)
        b = as_label_maps(y, "y", num_classes)
        a, b = (t.flatten(2) for t in crop_label_maps(a, b, class_ids))
    cross = _pairwise_distance(a, b, class_ids, dtype).mean(dim=(1, 2))
    samples = _pairwise_distance(a, None, class_ids, dtype).mean(dim=(1, 2))
    labels = _pairwise_distance(b, None, class_ids, dtype).mean(dim=(1, 2))
    return cross, samples, labels


def compute_generalized_energy_distance(
    y_pred: torch.Tensor, y: torch.Tensor, num_classes: int | None = None, classes: Sequence[int] | None = None
) -> torch.Tensor:
    """Squared generalized energy distance per image, ``GED^2 = 2 E[d(s, y)] - E[d(s, s')] - E[d(y, y')]``.

    ``d = 1 - IoU`` on the foreground, ``d = 0`` when both masks are empty; expectations over all pairs including
    ``s = s'`` and ``y = y'`` (V-statistic), as in Kohl et al. 2018 and the CAR paper. This is the number the
    literature reports as "GED" (averaged over test images). See :func:`compute_ged_terms` for the arguments.

    Args:
        y_pred: ``(B, S, *spatial)`` model samples (binary masks, or label maps with ``num_classes``).
        y: ``(B, R, *spatial)`` graders' labels.
        num_classes: ``None`` for binary masks, else the number of classes of integer label maps.
        classes: with ``num_classes``, the classes to average ``d`` over (default ``1 .. num_classes - 1``).

    Returns:
        ``(B,)`` float32 GED^2 per image.

    Example:
        >>> s = torch.zeros(1, 2, 4, 4); s[0, 0, :2] = 1  # samples: one half-mask, one empty
        >>> compute_generalized_energy_distance(s, s)  # identical sets
        tensor([0.])
    """
    cross, samples, labels = compute_ged_terms(y_pred, y, num_classes=num_classes, classes=classes)
    return 2.0 * cross - samples - labels


class GEDTermsMetric(CumulativeIterationMetric):
    """Base of the GED metric classes: ``_compute_tensor`` returns ``[GED^2, cross, samples, third term]`` per image,
    ``__call__`` returns the batch's GED^2, ``aggregate`` reduces GED^2 over every image seen (all DDP ranks) and
    ``aggregate_terms`` gives the mean of each term under the names in :attr:`term_names`.

    Subclasses set ``reduction``, ``get_not_nans`` and :attr:`term_names`.
    """

    term_names: tuple[str, str, str, str] = ("ged", "cross", "samples", "labels")
    reduction: MetricReduction | str = MetricReduction.MEAN
    get_not_nans: bool = False

    def __call__(self, y_pred: Any, y: Any = None, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        """Compute GED^2 of one batch, add it (and its terms) to the buffers and return the ``(B,)`` GED^2."""
        ged, *_ = super().__call__(y_pred=y_pred, y=y, **kwargs)
        return ged

    def aggregate(
        self, reduction: MetricReduction | str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Reduce the GED^2 of every image seen so far (all DDP ranks), by default to their mean."""
        ged = all_buffers(self)[0]
        f = reduce_per_image(ged, reduction or self.reduction)
        return (f, (~torch.isnan(ged)).sum().float()) if self.get_not_nans else f

    def aggregate_terms(self) -> dict[str, torch.Tensor]:
        """Mean over all images of each term, keyed by :attr:`term_names` (0-dim tensors)."""
        return {k: v.nanmean() for k, v in zip(self.term_names, all_buffers(self))}


class GeneralizedEnergyDistanceMetric(GEDTermsMetric):
    """Accumulate per-image GED^2 over iterations; ``aggregate()`` returns the mean over all images.

    Inputs per call, ``metric(y_pred=..., y=...)``:

    - ``y_pred``: ``(B, S, *spatial)`` binary masks (or integer label maps with ``num_classes``); with
      ``from_probabilities=True`` it is ``(B, S, K, *spatial)`` probabilities from the model, turned into label maps
      by :func:`~monai_car.metrics.probabilities_to_labels` (argmax over ``K > 1``, ``p >= 0.5`` when ``K == 1``).
      In binary mode (``num_classes=None``) only ``K`` in ``{1, 2}`` is accepted (the foreground is class 1); with
      ``num_classes`` set, ``K`` must equal ``num_classes``.
    - ``y``: ``(B, R, *spatial)`` graders' binary masks (or integer label maps with ``num_classes``).

    A list of channel-first tensors per image is accepted too (MONAI's usual decollated form).
    Four buffers are kept per image (GED^2, cross, samples and labels terms); they are gathered across DDP ranks by
    ``get_buffer()`` like every MONAI cumulative metric.

    Args:
        num_classes: ``None`` for binary masks, or the number of classes of label maps.
        classes: with ``num_classes``, the classes to average the distance over (default ``1 .. num_classes - 1``).
        from_probabilities: whether ``y_pred`` holds ``(B, S, K, *spatial)`` probabilities instead of masks.
        reduction: MONAI reduction of the per-image values in ``aggregate`` (default ``"mean"``; ``"none"`` returns
            every image's value).
        get_not_nans: if true, ``aggregate`` returns ``(value, number of non-NaN images)``.

    Example:
        >>> metric = GeneralizedEnergyDistanceMetric()
        >>> for samples, graders in loader:  # (B, S, H, W), (B, R, H, W)
        ...     metric(y_pred=samples, y=graders)
        >>> ged = metric.aggregate().item(); terms = metric.aggregate_terms(); metric.reset()
    """

    def __init__(
        self,
        num_classes: int | None = None,
        classes: Sequence[int] | None = None,
        from_probabilities: bool = False,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__()
        if num_classes is None and classes is not None:
            raise ValueError("classes is only used with integer label maps: set num_classes as well.")
        if num_classes is not None:
            check_num_classes(classes, num_classes)
        self.num_classes = num_classes
        self.classes = None if classes is None else list(classes)
        self.from_probabilities = from_probabilities
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def _prepare_prediction(self, y_pred: torch.Tensor) -> torch.Tensor:
        if not self.from_probabilities:
            return y_pred
        return labels_from_probabilities(y_pred, self.num_classes, binary=self.num_classes is None)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> list[torch.Tensor]:  # type: ignore[override]
        if y is None:
            raise ValueError("y (the graders' labels, (B, R, *spatial)) is required.")
        y_pred = self._prepare_prediction(as_plain_tensor(y_pred, "y_pred"))
        cross, samples, labels = compute_ged_terms(y_pred, y, num_classes=self.num_classes, classes=self.classes)
        return [2.0 * cross - samples - labels, cross, samples, labels]
