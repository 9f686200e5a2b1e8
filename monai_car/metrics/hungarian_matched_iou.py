"""Hungarian-matched IoU (HM-IoU) between a model's samples and the graders' labels, per image."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.utils import MetricReduction
from scipy.optimize import linear_sum_assignment

from .pairwise_iou import compute_pairwise_iou
from .utils import all_buffers, as_plain_tensor, labels_from_probabilities, reduce_per_image

__all__ = ["HungarianMatchedIoUMetric", "compute_hungarian_matched_iou", "hungarian_matched_iou_from_matrix"]


def hungarian_matched_iou_from_matrix(iou: torch.Tensor) -> torch.Tensor:
    """HM-IoU from a precomputed ``(B, S, R)`` IoU matrix of samples against labels.

    Both sets are duplicated to ``L = lcm(S, R)`` elements (each sample ``L/S`` times, each label ``L/R`` times), so
    the ``(L, L)`` score matrix is the IoU matrix tiled ``(L/S, L/R)`` times; the optimal one-to-one assignment that
    maximises the total IoU is found with ``scipy.optimize.linear_sum_assignment`` (one call per image, on CPU) and
    the mean of the ``L`` matched IoUs is returned.

    Args:
        iou: ``(B, S, R)`` IoU values in ``[0, 1]``.

    Returns:
        ``(B,)`` float32 HM-IoU on ``iou``'s device.

    Raises:
        ValueError: when ``iou`` is not 3D, is empty, or holds values outside ``[0, 1]`` / NaN.
    """
    iou = as_plain_tensor(iou, "iou")
    if iou.ndim != 3 or 0 in iou.shape:
        raise ValueError(f"iou must be a non-empty (B, S, R) matrix per image, got shape {tuple(iou.shape)}.")
    if not bool(((iou >= 0) & (iou <= 1)).all()):
        raise ValueError("iou must hold values in [0, 1] (NaN is not allowed).")
    _, s, r = iou.shape
    size = math.lcm(s, r)
    scores = iou.detach().double().cpu().numpy()
    out = np.empty(iou.shape[0], dtype=np.float64)
    for i, matrix in enumerate(scores):  # one assignment problem per image
        tiled = np.tile(matrix, (size // s, size // r))
        rows, cols = linear_sum_assignment(tiled, maximize=True)
        out[i] = tiled[rows, cols].mean()
    return torch.as_tensor(out, dtype=torch.float32, device=iou.device)


def compute_hungarian_matched_iou(y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Hungarian-matched IoU per image (Kohl et al. 2019; CAR paper appendix A.3).

    The ``(B, S, R)`` IoU matrix is computed once in torch (``IoU = 1`` when both masks are empty, so that a correctly
    predicted absence of a lesion is rewarded; counted over each image's foreground window, see
    :func:`~monai_car.metrics.compute_pairwise_iou`), then both sets are duplicated to ``lcm(S, R)`` elements and
    matched one-to-one to maximise the total IoU (see :func:`hungarian_matched_iou_from_matrix`). With 16 samples and 4
    graders each grader appears 4 times; with ``S = 3, R = 2`` both sets grow to 6.

    Cost: the assignment is ``O(lcm(S, R)^3)`` per image; keep ``S`` a multiple of ``R`` (16 or 100 samples for 4
    graders) so that ``lcm(S, R) = S``.

    Args:
        y_pred: ``(B, S, *spatial)`` binary masks (bool or 0/1 of any dtype), the model's samples.
        y: ``(B, R, *spatial)`` binary masks, the graders' labels, same batch size, spatial shape and device.

    Returns:
        ``(B,)`` float32 HM-IoU in ``[0, 1]`` on the inputs' device.

    Raises:
        TypeError / ValueError: as :func:`~monai_car.metrics.compute_pairwise_iou`.

    Example:
        >>> y = torch.zeros(1, 2, 4, 4); y[0, 0, :2] = 1
        >>> compute_hungarian_matched_iou(y, y)
        tensor([1.])
    """
    y_pred = as_plain_tensor(y_pred, "y_pred")
    y = as_plain_tensor(y, "y")
    for x, n in ((y_pred, "y_pred"), (y, "y")):
        if x.ndim < 3:
            raise ValueError(f"{n} must be (B, N, *spatial) binary masks, got shape {tuple(x.shape)}.")
    return hungarian_matched_iou_from_matrix(compute_pairwise_iou(y_pred, y))


class HungarianMatchedIoUMetric(CumulativeIterationMetric):
    """Accumulate per-image HM-IoU over iterations; ``aggregate()`` returns the mean over all images.

    Inputs per call, ``metric(y_pred=..., y=...)``:

    - ``y_pred``: ``(B, S, *spatial)`` binary masks, or with ``from_probabilities=True`` ``(B, S, K, *spatial)``
      probabilities with ``K`` in ``{1, 2}`` (``K == 2``: argmax, foreground is class 1; ``K == 1``: ``p >= 0.5``).
    - ``y``: ``(B, R, *spatial)`` graders' binary masks.

    A list of channel-first tensors per image is accepted too. The per-image buffer is gathered across DDP ranks by
    ``get_buffer()`` like every MONAI cumulative metric.

    Args:
        from_probabilities: whether ``y_pred`` holds probabilities instead of masks.
        reduction: MONAI reduction of the per-image values in ``aggregate`` (default ``"mean"``).
        get_not_nans: if true, ``aggregate`` returns ``(value, number of non-NaN images)``.
    """

    def __init__(
        self,
        from_probabilities: bool = False,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__()
        self.from_probabilities = from_probabilities
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        if y is None:
            raise ValueError("y (the graders' masks, (B, R, *spatial)) is required.")
        y_pred = as_plain_tensor(y_pred, "y_pred")
        if self.from_probabilities:
            y_pred = labels_from_probabilities(y_pred, None, binary=True)
        return compute_hungarian_matched_iou(y_pred, y)

    def aggregate(
        self, reduction: MetricReduction | str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Reduce the HM-IoU of every image seen so far (all DDP ranks), by default to their mean."""
        values = all_buffers(self)[0]
        f = reduce_per_image(values, reduction or self.reduction)
        return (f, (~torch.isnan(values)).sum().float()) if self.get_not_nans else f
