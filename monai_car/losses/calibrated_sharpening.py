"""Sharpening of G's samples toward label-like targets whose class frequencies across the samples are F's.

:func:`~monai_car.losses.sharpening_loss` pulls every sample toward its own argmax. That keeps samples label-like
but leans to the majority: a pixel where G's samples are still soft (p = 0.7 / 0.3 in every sample) is pulled to the
0.7 class in *every* sample, so the minority class is drawn in none. The calibrated target instead assigns the ``M``
samples of a pixel to classes so that the classes' shares of the ``M`` samples are F's probabilities, each sample
going where its own probabilities point most (an entropic optimal transport between the samples and the classes,
solved by Sinkhorn iterations, as in the equipartition step of self-labelling / SwAV, Asano et al. 2020,
Caron et al. 2020). With ``epsilon`` small the targets are near one-hot; where G already draws F's frequencies the
target is the sample's own sharpened probabilities, so the loss only sharpens.
"""

from __future__ import annotations

import math

import torch

from ._utils import masked_mean, validate_mask

__all__ = ["calibrated_sharpening_loss", "calibrated_sharpening_targets"]

_PROB_FLOOR = 1e-30
"""Probabilities are floored here before the logarithm (a normal float32, unlike ``finfo.tiny``'s neighbours)."""

_LOG_RANGE = 80.0
"""Terms more than this many nats below a row's largest are counted at that distance (``exp(-80)``, still a normal
float32): saturated samples otherwise fill the exponentials with subnormal floats, which made the loss 8x slower on
a CPU."""


def _logsumexp(a: torch.Tensor, dim: int) -> torch.Tensor:
    """``logsumexp`` over ``dim`` (kept) with every term at least ``exp(-_LOG_RANGE)`` times the largest."""
    top = a.amax(dim=dim, keepdim=True)
    return top + torch.log(torch.exp((a - top).clamp_min(-_LOG_RANGE)).sum(dim=dim, keepdim=True))


def calibrated_sharpening_targets(
    samples: torch.Tensor, target: torch.Tensor, epsilon: float = 0.1, iterations: int = 5
) -> torch.Tensor:
    """Per-sample target distributions whose mean over the samples is (about) ``target``.

    For every pixel, the entropic transport plan ``pi`` between the ``M`` samples (mass ``1 / M`` each) and the
    ``K`` classes (mass ``target_k``) with cost ``-log p_{m,k}`` and regularisation ``epsilon``:
    ``pi_{m,k} = exp(log p_{m,k} / epsilon + u_m + v_k)``, the dual variables found by ``iterations`` Sinkhorn
    steps (log domain) from ``v = 0``; a sample's target is its row of the plan, normalised. With ``epsilon = 1``
    the target is the sample's own probabilities reweighted per class (no sharpening), with ``epsilon -> 0`` a
    hard assignment.

    Args:
        samples: ``(B, M, K, *spatial)`` G's probabilities (detached inside).
        target: ``(B, K, *spatial)`` F's probabilities, the class shares the samples should take.
        epsilon: the regularisation, in ``(0, 1]``.
        iterations: Sinkhorn steps (each a row and a column normalisation), at least 1.

    Returns:
        ``(B, M, K, *spatial)`` targets, each sample's summing to 1 over ``K``; no gradient.
    """
    if samples.ndim < 4:
        raise ValueError(f"samples must be (B, M, K, *spatial), got {tuple(samples.shape)}.")
    if target.shape != samples.shape[:1] + samples.shape[2:]:
        raise ValueError(
            f"target {tuple(target.shape)} must be (B, K, *spatial) matching samples {tuple(samples.shape)}."
        )
    if not 0.0 < float(epsilon) <= 1.0:
        raise ValueError(f"epsilon must be in (0, 1], got {epsilon!r}.")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}.")
    with torch.no_grad():
        p = samples.detach().float()
        log_kernel = torch.log(p.clamp_min(_PROB_FLOOR)) / float(epsilon)  # (B, M, K, *spatial)
        log_row = -math.log(p.shape[1])
        f = target.detach().float()
        f = f / f.sum(dim=1, keepdim=True).clamp_min(_PROB_FLOOR)
        log_col = torch.log(f.clamp_min(_PROB_FLOOR)).unsqueeze(1)
        v = torch.zeros_like(log_col)  # (B, 1, K, *spatial)
        for _ in range(iterations):
            u = log_row - _logsumexp(log_kernel + v, dim=2)  # (B, M, 1, *spatial)
            v = log_col - _logsumexp(log_kernel + u, dim=1)
        logits = log_kernel + v  # a sample's row of the plan, up to its u; normalised as a softmax
        logits = (logits - logits.amax(dim=2, keepdim=True)).clamp_min(-_LOG_RANGE)
        goal = torch.exp(logits)
        return goal / goal.sum(dim=2, keepdim=True)


def calibrated_sharpening_loss(
    samples: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    epsilon: float = 0.1,
    iterations: int = 5,
) -> torch.Tensor:
    """Mean cross entropy of each of G's samples against its calibrated target (:func:`calibrated_sharpening_targets`).

    Args:
        samples: ``(B, M, K, *spatial)`` G's probabilities.
        target: ``(B, K, *spatial)`` F's probabilities (detached).
        valid: optional ``(B, 1, *spatial)`` (or ``(B, *spatial)``) mask, true on valid pixels; the mean divides by
            the number of valid sample pixels (0 when there is none).
        epsilon: the transport's regularisation (smaller: harder targets).
        iterations: Sinkhorn steps.

    Returns:
        a 0-dim loss; its gradient reaches ``samples`` only.
    """
    goal = calibrated_sharpening_targets(samples, target, epsilon=epsilon, iterations=iterations)
    log_p = torch.log(samples.clamp_min(_PROB_FLOOR))
    ce = -(goal * log_p).sum(dim=2)  # (B, M, *spatial)
    if valid is not None:
        valid = validate_mask(valid, (ce.shape[0], *ce.shape[2:])).unsqueeze(1).expand_as(ce)
    return masked_mean(ce, valid)
