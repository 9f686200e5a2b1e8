"""The calibration loss: G's sample mean should match F's probabilities."""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

from ._utils import masked_mean, validate_mask

__all__ = ["CalibrationLoss", "GaussianCalibrationLoss"]


class CalibrationLoss(_Loss):
    """``KL(mean_m G(F(x), z_m) || F(x))``, summed over classes and averaged over valid pixels.

    Both distributions are clamped to ``[clamp, 1 - clamp]`` inside the logarithms (the reference clamps at 1e-3);
    the weight in front of the log ratio is the unclamped sample mean, so the loss is exactly zero when the two
    distributions agree. The target (F's output) is detached: gradients reach only G.

    Args:
        clamp: probability floor inside the logarithms.

    Shapes:
        ``samples``: ``(B, M, K, *spatial)`` G's probabilities; ``target``: ``(B, K, *spatial)`` F's probabilities;
        ``mask``: optional ``(B, *spatial)`` or ``(B, 1, *spatial)``, true (or 1) on valid pixels. The mean divides by
        the number of valid pixels; with no valid pixel the loss is 0 (still attached to the graph).
    """

    def __init__(self, clamp: float = 1e-3) -> None:
        super().__init__()
        if not 0.0 <= clamp < 0.5:
            raise ValueError(f"clamp must be in [0, 0.5), got {clamp}.")
        self.clamp = clamp

    def forward(self, samples: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if samples.ndim < 4:
            raise ValueError(f"samples must be (B, M, K, *spatial), got {tuple(samples.shape)}.")
        if target.shape != samples.shape[:1] + samples.shape[2:]:
            raise ValueError(
                f"target {tuple(target.shape)} must be (B, K, *spatial) matching samples {tuple(samples.shape)}."
            )
        mean = samples.mean(dim=1)
        lo, hi = self.clamp, 1.0 - self.clamp
        log_ratio = torch.log(mean.clamp(lo, hi)) - torch.log(target.detach().clamp(lo, hi))
        kl = (mean * log_ratio).sum(dim=1)  # (B, *spatial)
        return masked_mean(kl, validate_mask(mask, kl.shape))


class GaussianCalibrationLoss(_Loss):
    """The calibration loss for a unit-variance Gaussian likelihood: ``0.5 * (mean_m G - F)^2`` averaged.

    This is ``KL(N(mean_m G, 1) || N(F, 1))`` (paper appendix A.2), used by the 1D bimodal regression experiment.

    Shapes:
        ``samples``: ``(B, M, *rest)``; ``target``: ``(B, *rest)``; optional ``mask`` of ``target``'s shape.
    """

    def forward(self, samples: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if samples.ndim < 2:
            raise ValueError(f"samples must be (B, M, ...), got {tuple(samples.shape)}.")
        if target.shape != samples.shape[:1] + samples.shape[2:]:
            raise ValueError(
                f"target {tuple(target.shape)} must be samples' shape without the M axis {tuple(samples.shape)}."
            )
        sq = 0.5 * (samples.mean(dim=1) - target.detach()) ** 2
        return masked_mean(sq, validate_mask(mask, sq.shape))
