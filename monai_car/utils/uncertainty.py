"""Per-pixel uncertainty maps of a calibrated stochastic segmenter (torch, batched).

All entropies use the natural logarithm (nats). Probabilities are clamped to ``[eps, 1]`` inside the logarithm, so a
zero probability contributes ``0 * log(eps) = 0`` and no map is ever NaN or infinite for finite inputs.

Shapes follow the engines' outputs (:class:`~monai_car.utils.enums.CarKeys`):

- F's probabilities ``(B, K, *spatial)``;
- G's samples ``(B, S, K, *spatial)``.

A single channel (``K == 1``) is read as the foreground probability ``p`` of a binary problem, i.e. the two-class
distribution ``(1 - p, p)``.
"""

from __future__ import annotations

import torch

__all__ = [
    "entropy",
    "calibration_entropy",
    "sample_mean_entropy",
    "mean_sample_entropy",
    "mutual_information",
    "sample_variance",
    "foreground_probability",
    "uncertainty_maps",
]

_EPS = 1e-12


def _check_probs(x: object, name: str, min_ndim: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; convert it with torch.as_tensor.")
    as_tensor = getattr(x, "as_tensor", None)  # monai.data.MetaTensor -> plain tensor
    x = as_tensor() if callable(as_tensor) else x
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dims, got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating-point probabilities, got dtype {x.dtype}.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or inf values; check the network outputs before computing uncertainty.")
    return x


def entropy(probs: torch.Tensor, dim: int = 1, eps: float = _EPS) -> torch.Tensor:
    """Shannon entropy (nats) of categorical distributions along ``dim``.

    Args:
        probs: probabilities, e.g. ``(B, K, *spatial)`` with ``dim=1``. With a single channel along ``dim`` the values
            are foreground probabilities of a binary problem (Bernoulli entropy).
        dim: the class dimension.
        eps: lower clamp of the probabilities inside the logarithm.

    Returns:
        ``probs`` with ``dim`` removed, float, in ``[0, ln K]`` (``[0, ln 2]`` for one channel).

    Raises:
        TypeError: when ``probs`` is not a tensor.
        ValueError: on a non-floating dtype, NaN/inf values or a bad ``dim``.
    """
    probs = _check_probs(probs, "probs", 1)
    if not -probs.ndim <= dim < probs.ndim:
        raise ValueError(f"dim={dim} is out of range for probs of shape {tuple(probs.shape)}.")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}.")
    p = probs.clamp(0.0, 1.0)
    if p.shape[dim] == 1:
        p = torch.cat([1.0 - p, p], dim=dim)
    h = -(p * p.clamp_min(eps).log()).sum(dim=dim)
    return h.clamp_min(0.0)


def calibration_entropy(calibration_probs: torch.Tensor) -> torch.Tensor:
    """Predictive entropy of F (aleatoric uncertainty): ``(B, K, *spatial) -> (B, *spatial)``."""
    calibration_probs = _check_probs(calibration_probs, "calibration_probs", 3)
    return entropy(calibration_probs, dim=1)


def sample_mean_entropy(samples: torch.Tensor) -> torch.Tensor:
    """Entropy of the mean of G's samples (total predictive entropy): ``(B, S, K, *spatial) -> (B, *spatial)``."""
    samples = _check_probs(samples, "samples", 4)
    return entropy(samples.mean(dim=1), dim=1)


def mean_sample_entropy(samples: torch.Tensor) -> torch.Tensor:
    """Mean over the samples of each sample's entropy: ``(B, S, K, *spatial) -> (B, *spatial)``."""
    samples = _check_probs(samples, "samples", 4)
    return entropy(samples, dim=2).mean(dim=1)


def mutual_information(samples: torch.Tensor) -> torch.Tensor:
    """Mutual information between the label and the noise: ``H(mean_s p_s) - mean_s H(p_s)``.

    Zero where all samples agree, up to ``ln K`` where confident samples disagree. Clamped at 0 (the difference of
    two entropies can be a tiny negative number in floating point; by Jensen's inequality it is ``>= 0``).

    Args:
        samples: ``(B, S, K, *spatial)`` probabilities of G's samples.

    Returns:
        ``(B, *spatial)`` mutual information (nats).
    """
    samples = _check_probs(samples, "samples", 4)
    mi = entropy(samples.mean(dim=1), dim=1) - entropy(samples, dim=2).mean(dim=1)
    return mi.clamp_min(0.0)


def foreground_probability(probs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Foreground probability along the class ``dim``: the channel itself for ``K == 1``, else ``1 - p[background]``.

    For a binary problem (``K == 2``) this is ``p[1]``; for ``K > 2`` it is the probability of "any foreground class".
    The class ``dim`` is removed.
    """
    probs = _check_probs(probs, "probs", 1)
    if not -probs.ndim <= dim < probs.ndim:
        raise ValueError(f"dim={dim} is out of range for probs of shape {tuple(probs.shape)}.")
    if probs.shape[dim] == 1:
        return probs.select(dim, 0)
    return 1.0 - probs.select(dim, 0)


def sample_variance(samples: torch.Tensor, per_class: bool = False) -> torch.Tensor:
    """Per-pixel variance over the samples (population variance, divided by ``S``, not ``S - 1``).

    By default the variance of the foreground probability (:func:`foreground_probability`: ``p[1]`` for a binary
    problem, ``1 - p[background]`` for more classes); with ``per_class=True`` the variance of every class channel.
    For hard samples it is ``f (1 - f)`` with ``f`` the fraction of samples marking the pixel: at most 0.25.

    Args:
        samples: ``(B, S, K, *spatial)`` probabilities of G's samples.
        per_class: return ``(B, K, *spatial)`` instead of the foreground ``(B, *spatial)``.

    Returns:
        ``(B, *spatial)`` or ``(B, K, *spatial)`` variance, ``>= 0``.
    """
    samples = _check_probs(samples, "samples", 4)
    x = samples if per_class else foreground_probability(samples, dim=2)
    return x.var(dim=1, unbiased=False).clamp_min(0.0)


def uncertainty_maps(samples: torch.Tensor, calibration_probs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """All per-pixel maps of one batch, keyed by the names used for the output files.

    Args:
        samples: ``(B, S, K, *spatial)`` probabilities of G's samples.
        calibration_probs: ``(B, K, *spatial)`` F's probabilities (optional).

    Returns:
        a dict of ``(B, *spatial)`` maps: ``entropy_sample_mean``, ``mutual_information``, ``sample_variance`` and,
        with ``calibration_probs``, ``entropy_calibration``.

    Raises:
        ValueError: when the two inputs disagree in batch size, classes or spatial shape.
    """
    samples = _check_probs(samples, "samples", 4)
    out = {}
    if calibration_probs is not None:
        calibration_probs = _check_probs(calibration_probs, "calibration_probs", 3)
        if calibration_probs.shape[0] != samples.shape[0] or calibration_probs.shape[1:] != samples.shape[2:]:
            raise ValueError(
                f"calibration_probs {tuple(calibration_probs.shape)} must be (B, K, *spatial) matching samples "
                f"{tuple(samples.shape)} = (B, S, K, *spatial)."
            )
        out["entropy_calibration"] = calibration_entropy(calibration_probs)
    out["entropy_sample_mean"] = sample_mean_entropy(samples)
    out["mutual_information"] = mutual_information(samples)
    out["sample_variance"] = sample_variance(samples)
    return out
