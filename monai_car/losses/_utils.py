"""Masked means shared by the losses."""

from __future__ import annotations

import torch

__all__ = ["masked_mean", "validate_mask"]


def validate_mask(mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    """Return ``mask`` as a bool tensor of ``shape`` (a singleton channel axis 1 is squeezed), or ``None``.

    Raises:
        ValueError: when the mask cannot be matched to ``shape``.
    """
    if mask is None:
        return None
    if mask.ndim == len(shape) + 1 and mask.shape[1] == 1:
        mask = mask.squeeze(1)
    if mask.shape != shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match the per-pixel loss shape {tuple(shape)}.")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() and not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("a float mask must hold only 0 and 1.")
        mask = mask != 0
    return mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` over the pixels where ``mask`` is true, dividing by the number of valid pixels.

    With ``mask=None`` this is the plain mean; with no valid pixel it is 0 (still attached to the graph).
    """
    if mask is None:
        return values.mean()
    count = mask.sum()
    total = (values * mask).sum()
    return total / count.clamp_min(1)
