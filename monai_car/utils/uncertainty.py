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

from .validation import as_plain_tensor, check_probabilities

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
    """A plain tensor of finite floating-point values with at least ``min_ndim`` dims (values are clamped later)."""
    return check_probabilities(as_plain_tensor(x, name), name, min_ndim=min_ndim, check_range=False)


def _entropy(p: torch.Tensor, dim: int, eps: float = _EPS) -> torch.Tensor:
    """:func:`entropy` of checked probabilities."""
    p = p.clamp(0.0, 1.0)
    if p.shape[dim] == 1:
        p = torch.cat([1.0 - p, p], dim=dim)
    return (-(p * p.clamp_min(eps).log()).sum(dim=dim)).clamp_min(0.0)


def _foreground(probs: torch.Tensor, dim: int) -> torch.Tensor:
    """:func:`foreground_probability` of checked probabilities."""
    return probs.select(dim, 0) if probs.shape[dim] == 1 else 1.0 - probs.select(dim, 0)


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
    return _entropy(probs, dim, eps)


def calibration_entropy(calibration_probs: torch.Tensor) -> torch.Tensor:
    """Predictive entropy of F (aleatoric uncertainty): ``(B, K, *spatial) -> (B, *spatial)``."""
    return _entropy(_check_probs(calibration_probs, "calibration_probs", 3), dim=1)


def sample_mean_entropy(samples: torch.Tensor) -> torch.Tensor:
    """Entropy of the mean of G's samples (total predictive entropy): ``(B, S, K, *spatial) -> (B, *spatial)``."""
    return _entropy(_check_probs(samples, "samples", 4).mean(dim=1), dim=1)


def mean_sample_entropy(samples: torch.Tensor) -> torch.Tensor:
    """Mean over the samples of each sample's entropy: ``(B, S, K, *spatial) -> (B, *spatial)``."""
    return _entropy(_check_probs(samples, "samples", 4), dim=2).mean(dim=1)


def mutual_information(samples: torch.Tensor) -> torch.Tensor:
    """Mutual information between the label and the noise: ``H(mean_s p_s) - mean_s H(p_s)``.

    Zero where all samples agree, up to ``ln K`` where confident samples disagree. Clamped at 0 (the difference of
    two entropies can be a tiny negative number in floating point; by Jensen's inequality it is ``>= 0``).

    Args:
        samples: ``(B, S, K, *spatial)`` probabilities of G's samples.

    Returns:
        ``(B, *spatial)`` mutual information (nats).
    """
    return _mutual_information(_check_probs(samples, "samples", 4))


def _mutual_information(samples: torch.Tensor) -> torch.Tensor:
    mi = _entropy(samples.mean(dim=1), dim=1) - _entropy(samples, dim=2).mean(dim=1)
    return mi.clamp_min(0.0)


def foreground_probability(probs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Foreground probability along the class ``dim``: the channel itself for ``K == 1``, else ``1 - p[background]``.

    For a binary problem (``K == 2``) this is ``p[1]``; for ``K > 2`` it is the probability of "any foreground class".
    The class ``dim`` is removed.
    """
    probs = _check_probs(probs, "probs", 1)
    if not -probs.ndim <= dim < probs.ndim:
        raise ValueError(f"dim={dim} is out of range for probs of shape {tuple(probs.shape)}.")
    return _foreground(probs, dim)


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
    return _sample_variance(_check_probs(samples, "samples", 4), per_class)


def _sample_variance(samples: torch.Tensor, per_class: bool = False) -> torch.Tensor:
    x = samples if per_class else _foreground(samples, dim=2)
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
        out["entropy_calibration"] = _entropy(calibration_probs, dim=1)
    out["entropy_sample_mean"] = _entropy(samples.mean(dim=1), dim=1)
    out["mutual_information"] = _mutual_information(samples)
    out["sample_variance"] = _sample_variance(samples)
    return out
