"""Masked cross entropy for the calibration net F."""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.nn.modules.loss import _Loss

from ._utils import masked_mean, validate_mask

__all__ = ["MaskedCrossEntropyLoss", "sharpening_loss"]


class MaskedCrossEntropyLoss(_Loss):
    """Pixelwise cross entropy averaged over valid pixels only.

    MONAI's ``MaskedLoss`` multiplies inputs by the mask, which for cross entropy still charges the masked pixels
    (zeroed logits give ``log K``); here masked pixels are left out and the mean divides by the number of valid ones.

    Args:
        ignore_index: a label value that marks void pixels (e.g. Cityscapes' 255), left out like masked pixels.
        input_is_probs: the input holds probabilities (a softmax output) rather than logits; they are clamped to
            ``[eps, 1]`` before the log.
        eps: the probability floor when ``input_is_probs``.

    Shapes:
        ``input``: ``(B, K, *spatial)``; ``target``: integer class indices ``(B, *spatial)`` or ``(B, 1, *spatial)``;
        ``mask``: optional ``(B, *spatial)`` or ``(B, 1, *spatial)``, true on valid pixels.
    """

    def __init__(self, ignore_index: int | None = None, input_is_probs: bool = False, eps: float = 1e-7) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.input_is_probs = input_is_probs
        self.eps = eps

    def forward(self, input: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if input.ndim < 3:
            raise ValueError(f"input must be (B, K, *spatial), got {tuple(input.shape)}.")
        if target.ndim == input.ndim and target.shape[1] == 1:
            target = target.squeeze(1)
        if target.shape != input.shape[:1] + input.shape[2:]:
            raise ValueError(f"target {tuple(target.shape)} must be (B, *spatial) matching input {tuple(input.shape)}.")
        if target.is_floating_point():
            if not bool((target == target.round()).all()):
                raise ValueError("target must hold integer class indices, got non-integer values.")
        target = target.long()
        valid = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        mask = validate_mask(mask, target.shape)
        if mask is not None:
            valid &= mask
        k = input.shape[1]
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        if bool(((safe_target < 0) | (safe_target >= k)).any()):
            raise ValueError(f"target holds class indices outside [0, {k - 1}] on valid pixels.")
        log_probs = torch.log(input.clamp_min(self.eps)) if self.input_is_probs else F.log_softmax(input, dim=1)
        nll = -log_probs.gather(1, safe_target.unsqueeze(1)).squeeze(1)
        return masked_mean(nll, valid if (mask is not None or self.ignore_index is not None) else None)


def sharpening_loss(samples: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross entropy of each of G's samples against its own argmax, ``-log max_k p``, over valid pixels.

    It does not change which class a sample draws, only how sure it is: a trainer whose D sees hard samples uses it to
    keep G's probabilities label-like.

    Args:
        samples: ``(B, M, K, *spatial)`` probabilities.
        valid: optional ``(B, 1, *spatial)`` (or ``(B, *spatial)``) mask, true on valid pixels; the mean divides by
            the number of valid sample pixels (0 when there is none).
    """
    if samples.ndim < 4:
        raise ValueError(f"samples must be (B, M, K, *spatial), got {tuple(samples.shape)}.")
    log_max = torch.log(samples.amax(dim=2).clamp_min(torch.finfo(samples.dtype).tiny))  # (B, M, *spatial)
    if valid is not None:
        valid = validate_mask(valid, (log_max.shape[0], *log_max.shape[2:])).unsqueeze(1).expand_as(log_max)
    return masked_mean(-log_max, valid)
