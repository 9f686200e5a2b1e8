"""Pairwise IoU between two sets of masks per image, by batched matrix products of flattened masks."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .utils import (
    FLOAT32_EXACT_INT,
    as_binary_masks,
    as_label_maps,
    as_plain_tensor,
    check_num_classes,
    check_sample_sets,
    crop_to_foreground,
    in_classes,
)

__all__ = [
    "compute_pairwise_class_iou",
    "compute_pairwise_iou",
    "compute_pairwise_iou_distance",
    "count_dtype",
    "crop_label_maps",
    "iou_from_counts",
    "pairwise_class_counts",
    "pairwise_intersection_union",
]


def count_dtype(num_pixels: int) -> torch.dtype:
    """float32 counts pixels exactly up to 2**24; float64 beyond."""
    return torch.float32 if num_pixels <= FLOAT32_EXACT_INT else torch.float64


def pairwise_intersection_union(
    a: torch.Tensor, b: torch.Tensor | None, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel counts of intersection and union for every pair of masks.

    Args:
        a: ``(B, N, P)`` bool masks, flattened (or already converted to ``dtype``, which skips a copy).
        b: ``(B, M, P)`` bool masks, flattened, or ``None`` to pair ``a`` with itself.
        dtype: the counts' dtype; by default :func:`count_dtype` of ``P``. Callers that cropped the masks pass the
            dtype of the uncropped pixel count, so that the IoU is computed in the same precision either way.

    Returns:
        ``(intersection, union)``, each ``(B, N, M)``, exact integer counts held in float32 (float64 when
        ``P > 2**24``, beyond which float32 no longer counts exactly).
    """
    dtype = count_dtype(a.shape[-1]) if dtype is None else dtype
    af = a.to(dtype)
    bf = af if b is None else b.to(dtype)
    inter = torch.bmm(af, bf.transpose(1, 2))
    area_a = af.sum(dim=-1)
    area_b = area_a if b is None else bf.sum(dim=-1)
    union = area_a[:, :, None] + area_b[:, None, :] - inter
    return inter, union


def crop_label_maps(a: torch.Tensor, b: torch.Tensor, classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop label maps to the window of each image that holds every pixel labelled with one of ``classes``.

    Exact for the per-class counts of ``classes``: a pixel outside the window carries none of them in any map, so it
    adds to no per-class intersection or union (labels not in ``classes``, e.g. void, are never compared). When
    ``classes`` holds the background 0, every background pixel counts and the window would have to span (nearly) the
    whole image: nothing is cropped then.
    """
    if 0 in classes:
        return a, b
    return crop_to_foreground(a, b, in_classes(a, classes), in_classes(b, classes))


def iou_from_counts(inter: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    """IoU = intersection / union, and 1 where the union is empty (both masks empty); float32."""
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
    return iou.float()


def compute_pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Foreground IoU of every mask of ``a`` with every mask of ``b``, per image.

    ``IoU(p, q) = |p & q| / |p | q|`` and, by the convention of the stochastic-segmentation literature (SPEC
    section 4), ``IoU = 1`` when both masks are empty. Counts are exact (batched matmul of the flattened masks), and
    only the window of each image that holds the foreground of its masks is counted (pixels empty in every mask add
    to no count, so the values are the same as over the whole image, only faster on small lesions).

    Args:
        a: ``(B, N, *spatial)`` binary masks: bool, or 0/1 values of any integer or floating dtype.
        b: ``(B, M, *spatial)`` binary masks, same batch size, spatial shape and device as ``a``.

    Returns:
        ``(B, N, M)`` float32 IoU on ``a``'s device.

    Raises:
        TypeError: when an input is not a tensor.
        ValueError: on fewer than 3 dims, mismatched batch or spatial shapes, different devices, an empty set, or
            values other than 0 and 1.

    Example:
        >>> a = torch.zeros(1, 2, 4, 4, dtype=torch.bool); a[0, 0, :2] = True
        >>> compute_pairwise_iou(a, a)  # the empty mask matches itself with IoU 1
        tensor([[[1., 0.],
                 [0., 1.]]])
    """
    a = as_plain_tensor(a, "a")
    b = as_plain_tensor(b, "b")
    check_sample_sets(a, b, ("a", "b"))
    dtype = count_dtype(a.shape[2:].numel())
    a, b = crop_to_foreground(as_binary_masks(a, "a"), as_binary_masks(b, "b"))
    return iou_from_counts(*pairwise_intersection_union(a.flatten(2), b.flatten(2), dtype))


def compute_pairwise_iou_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The GED distance ``d = 1 - IoU`` for every pair of masks (``d = 0`` when both masks are empty).

    Args:
        a: ``(B, N, *spatial)`` binary masks.
        b: ``(B, M, *spatial)`` binary masks.

    Returns:
        ``(B, N, M)`` float32 distances in ``[0, 1]``. See :func:`compute_pairwise_iou` for the checks.
    """
    return 1.0 - compute_pairwise_iou(a, b)


def pairwise_class_counts(
    a: torch.Tensor, b: torch.Tensor | None, classes: Sequence[int], dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class intersection and union counts of flattened label maps.

    Args:
        a: ``(B, N, P)`` int64 label maps. b: ``(B, M, P)`` int64 label maps, or ``None`` to pair ``a`` with itself.
        classes: the class ids (one matmul per class: the loop runs over classes, never over pairs).
        dtype: the counts' dtype (see :func:`pairwise_intersection_union`).

    Returns:
        ``(intersection, union)``, each ``(B, N, M, C)``.
    """
    inters, unions = [], []
    for c in classes:
        inter, union = pairwise_intersection_union(a == c, None if b is None else b == c, dtype)
        inters.append(inter)
        unions.append(union)
    return torch.stack(inters, dim=-1), torch.stack(unions, dim=-1)


def compute_pairwise_class_iou(
    a: torch.Tensor, b: torch.Tensor, classes: Sequence[int], num_classes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class IoU of every label map of ``a`` with every label map of ``b``, per image.

    For class ``c``, ``IoU_c(p, q) = |p==c & q==c| / |p==c | q==c|``, set to 1 when ``c`` is absent from both maps;
    ``present`` tells which classes occur in at least one map of the pair, so that callers can either count absent
    classes as perfect agreement (LIDC-style, :func:`~monai_car.metrics.compute_generalized_energy_distance`) or skip
    them (Cityscapes-style, :func:`~monai_car.metrics.compute_mode_weighted_ged`). When ``classes`` leaves out the
    background 0, only the window of each image holding the pixels of ``classes`` is counted (same values, faster).

    Args:
        a: ``(B, N, *spatial)`` integer label maps (integral floats and bools are accepted).
        b: ``(B, M, *spatial)`` integer label maps on the same grid and device.
        classes: the class ids to compare (non-empty, no duplicates). Other labels (e.g. void) are simply not
            compared.
        num_classes: if given, labels must lie in ``[0, num_classes)`` and ``classes`` inside that range.

    Returns:
        ``(iou, present)``: ``(B, N, M, C)`` float32 IoU and ``(B, N, M, C)`` bool, ``C = len(classes)``, classes in
        the order given.

    Raises:
        ValueError: on shape/device mismatches, non-integral labels, labels out of range, or bad ``classes``.
    """
    a = as_plain_tensor(a, "a")
    b = as_plain_tensor(b, "b")
    check_sample_sets(a, b, ("a", "b"))
    classes = check_num_classes(classes, num_classes)
    dtype = count_dtype(a.shape[2:].numel())
    a, b = crop_label_maps(as_label_maps(a, "a", num_classes), as_label_maps(b, "b", num_classes), classes)
    inter, union = pairwise_class_counts(a.flatten(2), b.flatten(2), classes, dtype)
    return iou_from_counts(inter, union), union > 0
