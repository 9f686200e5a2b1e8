"""Input checks and conversions shared by the monai-car metrics."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from monai.metrics import Cumulative
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction, look_up_option

from monai_car.utils.validation import as_plain_tensor

__all__ = [
    "FLOAT32_EXACT_INT",
    "all_buffers",
    "as_binary_masks",
    "as_label_maps",
    "as_plain_tensor",
    "check_num_classes",
    "check_sample_sets",
    "crop_to_foreground",
    "in_classes",
    "labels_from_probabilities",
    "probabilities_to_labels",
    "reduce_per_image",
]

FLOAT32_EXACT_INT = 2**24
"""float32 adds integers exactly up to 2**24; larger pixel counts are accumulated in float64."""


def probabilities_to_labels(probabilities: torch.Tensor) -> torch.Tensor:
    """Turn per-sample class probabilities into integer label maps.

    With ``K > 1`` channels the label is the argmax over the channels (ties go to the lowest class index, as
    ``torch.argmax`` does); with ``K == 1`` the single channel is a foreground probability thresholded at 0.5
    (``p >= 0.5`` is foreground, the rule of ``monai.transforms.AsDiscrete(threshold=0.5)``).

    Args:
        probabilities: ``(B, S, K, *spatial)`` probabilities (or any scores: only their order matters for K > 1).

    Returns:
        ``(B, S, *spatial)`` int64 label maps in ``[0, K)`` (``{0, 1}`` when ``K == 1``).

    Raises:
        ValueError: on fewer than 4 dimensions, a non-floating dtype, or non-finite values.
    """
    probabilities = as_plain_tensor(probabilities, "probabilities")
    if probabilities.ndim < 4:
        raise ValueError(
            f"probabilities must be (B, S, K, *spatial) with at least one spatial dim, got shape "
            f"{tuple(probabilities.shape)}; pass label maps/masks directly instead of probabilities if you have them."
        )
    if not probabilities.is_floating_point():
        raise ValueError(f"probabilities must be a floating tensor, got {probabilities.dtype}.")
    if not bool(torch.isfinite(probabilities).all()):
        raise ValueError("probabilities hold NaN or inf values.")
    if probabilities.shape[2] == 1:
        return (probabilities[:, :, 0] >= 0.5).long()
    return probabilities.argmax(dim=2)


def reduce_per_image(values: torch.Tensor, reduction: MetricReduction | str) -> torch.Tensor:
    """Reduce a ``(N,)`` tensor of per-image scores with MONAI's NaN-aware ``do_metric_reduction``.

    Batch-reducing modes (``"mean"``, ``"sum"``, ``"mean_batch"``, ``"sum_batch"``) return a 0-dim tensor; the
    others (``"none"``, ``"mean_channel"``, ``"sum_channel"``) return the ``(N,)`` per-image values.
    """
    reduction = look_up_option(reduction, MetricReduction)
    if values.ndim != 1:
        raise ValueError(f"per-image scores must be a 1D tensor, got shape {tuple(values.shape)}.")
    f, _ = do_metric_reduction(values.clone()[:, None], reduction)
    if reduction in (MetricReduction.MEAN, MetricReduction.SUM, MetricReduction.MEAN_BATCH, MetricReduction.SUM_BATCH):
        return f.reshape(())
    return f.reshape(-1)


def check_sample_sets(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    """Check that ``a`` ``(B, N, *spatial)`` and ``b`` ``(B, M, *spatial)`` can be compared pairwise."""
    na, nb = names
    for x, n in ((a, na), (b, nb)):
        if x.ndim < 3:
            raise ValueError(
                f"{n} must be (B, N, *spatial) with a batch dim, a set dim and at least one spatial dim, got shape "
                f"{tuple(x.shape)}; add the missing dims with unsqueeze (e.g. a single mask per image is (B, 1, H, W))."
            )
        if x.shape[1] == 0:
            raise ValueError(f"{n} holds an empty set (dim 1 is 0): at least one mask per image is needed.")
        if x.is_complex():
            raise ValueError(f"{n} must be a real tensor, got {x.dtype}.")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"batch sizes differ: {na} has {a.shape[0]} images, {nb} has {b.shape[0]}.")
    if a.shape[2:] != b.shape[2:]:
        raise ValueError(
            f"spatial shapes differ: {na} {tuple(a.shape[2:])} vs {nb} {tuple(b.shape[2:])}; both must be "
            "(B, N, *spatial) on the same grid."
        )
    if a.device != b.device:
        raise ValueError(f"{na} is on {a.device} but {nb} is on {b.device}; move both to the same device.")


def as_binary_masks(x: torch.Tensor, name: str) -> torch.Tensor:
    """Return a bool view of a mask that holds only 0 and 1 (any real dtype), or fail clearly."""
    if x.dtype == torch.bool:
        return x
    if not bool(((x == 0) | (x == 1)).all()):
        bad = x[(x != 0) & (x != 1)].flatten()[:3].tolist()
        raise ValueError(
            f"{name} must be a binary mask (bool, or 0/1 values), found values such as {bad}; threshold "
            "probabilities first (e.g. p >= 0.5), or pass integer label maps with num_classes= for multi-class data."
        )
    return x != 0


def as_label_maps(x: torch.Tensor, name: str, num_classes: int | None = None) -> torch.Tensor:
    """Return an int64 label map (floats must hold whole numbers); with ``num_classes`` check values in range."""
    if x.dtype == torch.bool:
        x = x.long()
    elif x.is_floating_point():
        if not bool((torch.isfinite(x) & (x == x.round())).all()):
            raise ValueError(
                f"{name} must be an integer label map, found non-integral values; argmax probabilities over the "
                "class dim first (or use from_probabilities=True in the metric classes)."
            )
        x = x.long()
    elif x.dtype != torch.int64:
        x = x.long()
    if num_classes is not None and x.numel() > 0:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name} holds labels in [{lo}, {hi}] but num_classes={num_classes} allows [0, {num_classes - 1}]."
            )
    return x


def check_num_classes(classes: Sequence[int] | None, num_classes: int | None) -> list[int]:
    """Validate the class ids to average over (default: the foreground classes ``1 .. num_classes - 1``)."""
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
    ):
        raise ValueError(f"num_classes must be an int >= 2 (background plus at least one class), got {num_classes!r}.")
    if classes is None:
        if num_classes is None:
            raise ValueError("classes must be given (a non-empty sequence of class ids).")
        return list(range(1, num_classes))
    if isinstance(classes, int) or not isinstance(classes, Sequence) or len(classes) == 0:
        raise ValueError(f"classes must be a non-empty sequence of int class ids, got {classes!r}.")
    out = []
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral):
            raise ValueError(f"classes must hold ints, got {c!r} in {classes!r}.")
        c = int(c)
        if num_classes is not None and not 0 <= c < num_classes:
            raise ValueError(f"class id {c} is outside [0, {num_classes - 1}] (num_classes={num_classes}).")
        out.append(c)
    if len(set(out)) != len(out):
        raise ValueError(f"classes holds duplicates: {classes!r}.")
    return out


def _any_over_set(x: torch.Tensor) -> torch.Tensor:
    """``(B, N, *spatial)`` bool -> ``(B, *spatial)``: true where any mask of the set is (bools reduced as bytes, which
    is much faster on CPU than ``Tensor.any``)."""
    return x.view(torch.uint8).amax(dim=1) > 0


def in_classes(x: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Bool map of the pixels of label maps ``x`` whose label is one of ``classes``."""
    if len(classes) == 1:
        return x == classes[0]
    return torch.isin(x, torch.as_tensor(list(classes), dtype=x.dtype, device=x.device))


def crop_to_foreground(
    a: torch.Tensor, b: torch.Tensor, fg_a: torch.Tensor | None = None, fg_b: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop both sets of an image to one window that holds all the foreground of that image, for the pair counts.

    Every pixel outside an image's window is background in every mask of both sets (no class compared), so it adds
    to no intersection and no union: all the pairwise counts, hence IoU, GED and HM-IoU, stay exactly the same, while
    the bool-to-float conversions and the matrix products run over the window only (a lesion covers a small part of
    a 128x128 crop). The window has one size for the whole batch, the largest of the images' foreground boxes, so
    the crops still stack into one ``(B, N, *window)`` tensor; it is placed per image, around that image's
    foreground and inside the image. An image with no foreground gets a window at the origin, all background, where
    the empty-pair conventions (``IoU = 1``, ``d = 0``) hold as before. A window as large as the image returns the
    inputs unchanged (no copy).

    Args:
        a: ``(B, N, *spatial)`` masks or label maps.
        b: ``(B, M, *spatial)``, same batch, spatial shape and device.
        fg_a: ``(B, N, *spatial)`` bool, the pixels of ``a`` that count in some pair (default: ``a``, a bool mask).
        fg_b: ``(B, M, *spatial)`` bool, likewise for ``b`` (default: ``b``).

    Returns:
        ``(a, b)`` cropped to ``(B, N, *window)`` and ``(B, M, *window)``.
    """
    fg_a = a if fg_a is None else fg_a
    fg_b = b if fg_b is None else fg_b
    union = _any_over_set(fg_a) | _any_over_set(fg_b)  # (B, *spatial)
    spatial = tuple(union.shape[1:])
    lows, highs = [], []
    for d, n in enumerate(spatial):
        other = tuple(1 + e for e in range(len(spatial)) if e != d)
        present = union.view(torch.uint8).amax(dim=other) > 0 if other else union  # (B, n)
        idx = torch.arange(n, device=union.device)
        lows.append(torch.where(present, idx, n).amin(dim=1))
        highs.append(torch.where(present, idx, -1).amax(dim=1))
    bounds = torch.stack([torch.stack(lows, dim=1), torch.stack(highs, dim=1)], dim=-1).tolist()  # (B, D, 2): 1 sync
    size = [
        max([1] + [hi - lo + 1 for lo, hi in (image[d] for image in bounds) if hi >= lo]) for d in range(len(spatial))
    ]
    if tuple(size) == spatial:
        return a, b
    windows = []
    for image in bounds:
        starts = [min(lo, n - w) if hi >= lo else 0 for (lo, hi), n, w in zip(image, spatial, size)]
        windows.append((slice(None),) + tuple(slice(s0, s0 + w) for s0, w in zip(starts, size)))
    crop_a = torch.stack([a[i][w] for i, w in enumerate(windows)])
    crop_b = torch.stack([b[i][w] for i, w in enumerate(windows)])
    return crop_a, crop_b


def labels_from_probabilities(y_pred: torch.Tensor, num_classes: int | None, binary: bool) -> torch.Tensor:
    """Label maps from ``(B, S, K, *spatial)`` probabilities, checking ``K`` against the metric's mode.

    ``binary``: the metric compares foreground masks, so only ``K`` in ``{1, 2}`` is accepted;
    ``num_classes``: if given, ``K`` must equal it.
    """
    if y_pred.ndim < 4:
        raise ValueError(
            f"with from_probabilities=True, y_pred must be (B, S, K, *spatial), got shape {tuple(y_pred.shape)}."
        )
    k = y_pred.shape[2]
    if binary and k > 2:
        raise ValueError(
            f"y_pred has K={k} class channels but the metric compares binary foreground masks: pass (B, S, 2, *spatial)"
            " or (B, S, 1, *spatial) foreground probabilities (GeneralizedEnergyDistanceMetric also takes "
            f"num_classes={k} to compare label maps per class)."
        )
    if num_classes is not None and k != num_classes:
        raise ValueError(f"y_pred has K={k} class channels but num_classes={num_classes}.")
    return probabilities_to_labels(y_pred)


def all_buffers(metric: Cumulative) -> list[torch.Tensor]:
    """The gathered buffers as a list (MONAI returns a bare tensor when there is one buffer)."""
    data = metric.get_buffer()
    if data is None:
        raise ValueError(f"{type(metric).__name__} has no data: call it on at least one batch before aggregate().")
    return [data] if isinstance(data, torch.Tensor) else list(data)
