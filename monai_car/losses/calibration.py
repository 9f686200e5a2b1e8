"""The calibration loss: G's sample mean should match F's probabilities."""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

from ._utils import masked_mean, validate_mask

__all__ = ["CALIBRATION_DIRECTIONS", "CALIBRATION_ESTIMATORS", "CalibrationLoss", "GaussianCalibrationLoss"]

CALIBRATION_ESTIMATORS = ("plugin", "jackknife")
"""How :class:`CalibrationLoss` estimates ``KL(E[G] || F)`` from ``M`` samples."""

CALIBRATION_DIRECTIONS = ("reverse", "forward")
"""Which KL :class:`CalibrationLoss` takes: ``KL(mean G || F)`` (the paper) or ``KL(F || mean G)``."""


class CalibrationLoss(_Loss):
    """``KL(mean_m G(F(x), z_m) || F(x))``, summed over classes and averaged over valid pixels.

    Both distributions are clamped to ``[clamp, 1 - clamp]`` inside the logarithms (the reference clamps at 1e-3);
    the weight in front of the log ratio is the unclamped sample mean, so the loss is exactly zero when the two
    distributions agree. The target (F's output) is detached: gradients reach only G.

    ``estimator="plugin"`` (the paper) takes the KL of the empirical mean of the ``M`` samples. That estimate is
    biased upwards by about ``(K - 1) / (2 M)`` per pixel where G's samples differ (second-order Taylor expansion:
    ``sum_k Var(G_k) / (2 M F_k)``), so for small ``M`` it rewards G for making its samples *alike*: hard samples
    drawn with exactly F's frequencies score worse than soft samples that all equal F, and G's argmax collapses onto
    the majority. ``estimator="jackknife"`` removes that first-order bias with the leave-one-sample-out jackknife,
    ``M * KL(mean) - (M - 1) * mean_j KL(mean without sample j)``, whose minimum in expectation is at
    ``E[G] = F`` whatever the spread of the samples (with ``M = 1`` it is the plug-in estimate).

    ``direction="forward"`` takes ``KL(F || mean_m G)`` instead, the cross entropy of F's distribution under the
    samples' mean (minus F's entropy). Both directions are zero exactly when the mean equals F, but they pull
    differently on a class G has dropped. With hard samples that all miss a class F gives probability ``f``, the
    paper's direction weighs the class by its mean, so its gradient on each sample's logit is scaled by the
    saturated softmax (``p (1 - p)``, ~1e-4 and less) and G cannot leave the collapsed mode; the forward direction's
    gradient on a sample's logit is ``f * p / (M * mean)``: about ``f / M`` however saturated the samples, and
    largest on the sample nearest to drawing the class, which is what G needs to learn to draw the class in a
    fraction ``f`` of its noise draws. The mean's logarithm is taken without the clamp (a clamp would zero that
    gradient), floored only at the smallest normal float. Only the plug-in estimate is offered: leave-one-out
    means of hard samples are often exactly zero, which makes the forward jackknife unbounded.

    ``pixel_reduction="mean"`` (the paper) averages the pixel KLs; ``"sum"`` sums them per image (then averages
    images): the KL between the two factorised label-map distributions, a per-image quantity like the adversarial
    loss it is weighed against. With the mean, a lesion covering 1 % of the crop contributes 1 % of its KL, and the
    balance with ``L_adv`` shifts with the crop size.

    Args:
        clamp: probability floor inside the logarithms.
        estimator: ``"plugin"`` or ``"jackknife"`` (``"reverse"`` direction only).
        pixel_reduction: ``"mean"`` or ``"sum"`` over the (valid) pixels of an image.
        direction: ``"reverse"`` (the paper, ``KL(mean G || F)``) or ``"forward"`` (``KL(F || mean G)``).

    Shapes:
        ``samples``: ``(B, M, K, *spatial)`` G's probabilities; ``target``: ``(B, K, *spatial)`` F's probabilities;
        ``mask``: optional ``(B, *spatial)`` or ``(B, 1, *spatial)``, true (or 1) on valid pixels. The mean divides by
        the number of valid pixels; with no valid pixel the loss is 0 (still attached to the graph).
    """

    def __init__(
        self, clamp: float = 1e-3, estimator: str = "plugin", pixel_reduction: str = "mean", direction: str = "reverse"
    ) -> None:
        super().__init__()
        if not 0.0 <= clamp < 0.5:
            raise ValueError(f"clamp must be in [0, 0.5), got {clamp}.")
        if estimator not in CALIBRATION_ESTIMATORS:
            raise ValueError(f"estimator must be one of {CALIBRATION_ESTIMATORS}, got {estimator!r}.")
        if pixel_reduction not in ("mean", "sum"):
            raise ValueError(f"pixel_reduction must be 'mean' or 'sum', got {pixel_reduction!r}.")
        if direction not in CALIBRATION_DIRECTIONS:
            raise ValueError(f"direction must be one of {CALIBRATION_DIRECTIONS}, got {direction!r}.")
        if direction == "forward" and estimator != "plugin":
            raise ValueError(
                "direction='forward' takes only estimator='plugin': the leave-one-out means of hard samples are often "
                "exactly zero, so a forward jackknife is unbounded. Use estimator='plugin' (the calibration estimator "
                "option of the trainer / bundle: --stage2#calibration_estimator plugin)."
            )
        self.clamp = clamp
        self.direction = direction
        self.estimator = estimator
        self.pixel_reduction = pixel_reduction

    def _kl(self, mean: torch.Tensor, log_target: torch.Tensor, dim: int) -> torch.Tensor:
        log_ratio = torch.log(mean.clamp(self.clamp, 1.0 - self.clamp)) - log_target
        return (mean * log_ratio).sum(dim=dim)

    @staticmethod
    def _forward_kl(mean: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``sum_k F_k (log F_k - log mean_k)`` per pixel ``(B, *spatial)``; ``0 log 0 = 0``."""
        tiny = torch.finfo(mean.dtype).tiny
        return (torch.xlogy(target, target) - target * torch.log(mean.clamp_min(tiny))).sum(dim=1)

    def forward(self, samples: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if samples.ndim < 4:
            raise ValueError(f"samples must be (B, M, K, *spatial), got {tuple(samples.shape)}.")
        if target.shape != samples.shape[:1] + samples.shape[2:]:
            raise ValueError(
                f"target {tuple(target.shape)} must be (B, K, *spatial) matching samples {tuple(samples.shape)}."
            )
        m = samples.shape[1]
        mean = samples.mean(dim=1)
        if self.direction == "forward":
            kl = self._forward_kl(mean, target.detach())
        else:
            log_target = torch.log(target.detach().clamp(self.clamp, 1.0 - self.clamp))
            kl = self._kl(mean, log_target, dim=1)  # (B, *spatial)
        if self.estimator == "jackknife" and m > 1:  # reverse direction only (refused with forward in __init__)
            leave_one_out = (m * mean.unsqueeze(1) - samples) / (m - 1)  # (B, M, K, *spatial)
            kl_loo = self._kl(leave_one_out, log_target.unsqueeze(1), dim=2).mean(dim=1)
            kl = m * kl - (m - 1) * kl_loo
        mask = validate_mask(mask, kl.shape)
        if self.pixel_reduction == "sum":
            kl = kl if mask is None else kl * mask
            return kl.reshape(kl.shape[0], -1).sum(dim=1).mean()
        return masked_mean(kl, mask)


class GaussianCalibrationLoss(_Loss):
    """The calibration loss for a unit-variance Gaussian likelihood: ``0.5 * (mean_m G - F)^2`` averaged.

    This is ``KL(N(mean_m G, 1) || N(F, 1))`` (paper appendix A.2), used by the 1D bimodal regression experiment.

    ``estimator="plugin"`` takes the square of the M samples' mean, whose expectation is
    ``0.5 * (E G - F)^2 + Var(G) / (2 M)``: it also shrinks G's spread. ``estimator="jackknife"`` (as in
    :class:`CalibrationLoss`; for a square the leave-one-out jackknife is exactly the unbiased U-statistic)
    subtracts the unbiased sample variance over ``M``: ``0.5 * ((mean - F)^2 - var / M)``, which can be negative.
    With ``M = 1`` it is the plug-in estimate.

    Args:
        estimator: ``"plugin"`` or ``"jackknife"``.

    Shapes:
        ``samples``: ``(B, M, *rest)``; ``target``: ``(B, *rest)``; optional ``mask`` of ``target``'s shape.
    """

    def __init__(self, estimator: str = "plugin") -> None:
        super().__init__()
        if estimator not in CALIBRATION_ESTIMATORS:
            raise ValueError(f"estimator must be one of {CALIBRATION_ESTIMATORS}, got {estimator!r}.")
        self.estimator = estimator

    def forward(self, samples: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if samples.ndim < 2:
            raise ValueError(f"samples must be (B, M, ...), got {tuple(samples.shape)}.")
        if target.shape != samples.shape[:1] + samples.shape[2:]:
            raise ValueError(
                f"target {tuple(target.shape)} must be samples' shape without the M axis {tuple(samples.shape)}."
            )
        sq = (samples.mean(dim=1) - target.detach()) ** 2
        if self.estimator == "jackknife" and samples.shape[1] > 1:
            sq = sq - samples.var(dim=1) / samples.shape[1]
        return masked_mean(0.5 * sq, validate_mask(mask, sq.shape))
