"""Data and evaluation for the 1D bimodal regression experiment (CAR paper section 5.1, appendix A.2).

``x ~ U[0, 1]``, ``b ~ Bernoulli(pi)``, ``e ~ N(0, sigma)`` and

- ``x in [0, 0.4)``: ``y = 0.5 - b + e`` (modes 0.5 and -0.5),
- ``x in [0.4, 0.8)``: ``y = (-1)^b * (-1.25 x + 1) + e`` (two mirrored lines),
- ``x in [0.8, 1]``: ``y = e`` (one mode).

The ``b = 1`` branch is the lower one in both bimodal regions, so a calibrated sampler puts a fraction ``pi`` of its
samples there.

Near ``x = 0.8`` the two lines of the second region meet, so a sample's nearest branch says little about the branch it
was drawn from: the data itself, sorted by nearest branch on the full grid of ``[0.4, 0.8)``, gives a frequency of
0.881 instead of 0.9 at ``pi = 0.9``, ``sigma = 0.03``. :func:`evaluation_grid` therefore takes ``min_separation``:
only ``x`` where the branches are at least that far apart are evaluated (0.2: ``[0.4, 0.72)``, where the data gives
0.900).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "BIMODAL_REGIONS",
    "bimodal_branches",
    "calibration_offset",
    "evaluation_grid",
    "mode_frequency",
    "off_branch_fraction",
    "sample_bimodal",
]

#: The two bimodal regions of x, keyed as in ``results.json``: ``[low, high)``.
BIMODAL_REGIONS: dict[str, tuple[float, float]] = {"0.0-0.4": (0.0, 0.4), "0.4-0.8": (0.4, 0.8)}


def _check_probability(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")


def _check_x(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError("x must be a floating point tensor.")
    if x.numel() and (bool(torch.isnan(x).any()) or float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError("x must lie in [0, 1].")


def bimodal_branches(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise-free value of ``y`` on the ``b = 0`` and ``b = 1`` branches at each ``x``.

    Args:
        x: inputs in ``[0, 1]``, any shape.

    Returns:
        ``(y0, y1)``, each of ``x``'s shape: 0.5 / -0.5 on ``[0, 0.4)``, ``+-(-1.25 x + 1)`` on ``[0.4, 0.8)`` and
        0 / 0 on ``[0.8, 1]``.
    """
    _check_x(x)
    line = -1.25 * x + 1.0
    first = x < 0.4
    second = (x >= 0.4) & (x < 0.8)
    zeros = torch.zeros_like(x)
    y0 = torch.where(first, torch.full_like(x, 0.5), torch.where(second, line, zeros))
    y1 = torch.where(first, torch.full_like(x, -0.5), torch.where(second, -line, zeros))
    return y0, y1


def sample_bimodal(
    num: int, pi: float, sigma: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``num`` pairs ``(x, y)`` of the bimodal regression data.

    Args:
        num: number of pairs, at least 1.
        pi: ``P(b = 1)``, in ``[0, 1]``.
        sigma: standard deviation of the additive Gaussian noise, ``>= 0``.
        generator: the torch random generator every draw comes from (CPU).

    Returns:
        ``x``, ``y`` and the branch indicator ``b``, each ``(num, 1)`` float32; ``b`` is 0 or 1 (in the last region
        it is drawn but does not change ``y``).
    """
    if not isinstance(num, int) or isinstance(num, bool) or num < 1:
        raise ValueError(f"num must be a positive integer, got {num!r}.")
    _check_probability("pi", pi)
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}.")
    if not isinstance(generator, torch.Generator):
        raise ValueError("generator must be a torch.Generator.")
    x = torch.rand(num, 1, generator=generator)
    b = (torch.rand(num, 1, generator=generator) < pi).float()
    e = sigma * torch.randn(num, 1, generator=generator)
    y0, y1 = bimodal_branches(x)
    y = torch.where(b > 0, y1, y0) + e
    return x, y, b


def evaluation_grid(points_per_region: int, min_separation: float = 0.0) -> dict[str, torch.Tensor]:
    """A fixed, evenly spaced grid of ``x`` in each bimodal region (cell centres, so the ends are excluded).

    Args:
        points_per_region: grid points in each region, at least 1.
        min_separation: keep only the part of a region where the two branches are at least this far apart, in
            ``[0, 1)``. The first region's branches are always 1 apart; the second region's are ``2 (1 - 1.25 x)``
            apart, so it ends at ``0.8 - 0.4 * min_separation`` (0 keeps all of ``[0.4, 0.8)``).

    Returns:
        ``{region key: (points_per_region,) float32 tensor}``, keys as in :data:`BIMODAL_REGIONS`.
    """
    if not isinstance(points_per_region, int) or isinstance(points_per_region, bool) or points_per_region < 1:
        raise ValueError(f"points_per_region must be a positive integer, got {points_per_region!r}.")
    if not isinstance(min_separation, (int, float)) or isinstance(min_separation, bool) or not 0 <= min_separation < 1:
        raise ValueError(f"min_separation must be a number in [0, 1), got {min_separation!r}.")
    ends = {"0.0-0.4": 0.4, "0.4-0.8": 0.8 - 0.4 * float(min_separation)}
    centres = (torch.arange(points_per_region, dtype=torch.float32) + 0.5) / points_per_region
    return {key: lo + (ends[key] - lo) * centres for key, (lo, _) in BIMODAL_REGIONS.items()}


def _check_grid_samples(x: torch.Tensor, samples: torch.Tensor) -> None:
    _check_x(x)
    if x.ndim != 1 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty 1D tensor, got shape {tuple(x.shape)}.")
    if float(x.max()) >= 0.8:
        raise ValueError("x must lie in the bimodal regions [0, 0.8).")
    if not isinstance(samples, torch.Tensor) or samples.ndim != 2 or samples.shape[0] != x.shape[0]:
        raise ValueError(f"samples must be (N, S) with N = {x.shape[0]}, got {tuple(getattr(samples, 'shape', ()))}.")
    if samples.shape[1] == 0 or not bool(torch.isfinite(samples).all()):
        raise ValueError("samples must hold at least one finite sample per x.")


def mode_frequency(x: torch.Tensor, samples: torch.Tensor) -> float:
    """Fraction of samples strictly nearer to the ``b = 1`` branch than to the ``b = 0`` branch.

    Args:
        x: ``(N,)`` inputs in ``[0, 0.8)`` (the bimodal regions, where the two branches differ).
        samples: ``(N, S)`` values of ``y`` sampled at each ``x`` (``S`` samples per input).

    Returns:
        The fraction over all ``N * S`` samples, in ``[0, 1]``; a sample exactly midway counts as ``b = 0``.
    """
    _check_grid_samples(x, samples)
    y0, y1 = bimodal_branches(x)
    nearer_b1 = (samples - y1[:, None]).abs() < (samples - y0[:, None]).abs()
    return float(nearer_b1.float().mean())


def off_branch_fraction(x: torch.Tensor, samples: torch.Tensor, tolerance: float) -> float:
    """Fraction of samples farther than ``tolerance`` from both branches (between or outside the modes).

    The mode frequency assigns every sample to its nearest branch; this says how many of them lie on neither.

    Args:
        x: ``(N,)`` inputs in ``[0, 0.8)``.
        samples: ``(N, S)`` values of ``y`` sampled at each ``x``.
        tolerance: distance to a branch beyond which a sample is off it, ``> 0`` (e.g. ``4 * sigma``: the data
            itself is off-branch with probability ``6e-5``).

    Returns:
        The fraction over all ``N * S`` samples, in ``[0, 1]``.
    """
    _check_grid_samples(x, samples)
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not tolerance > 0:
        raise ValueError(f"tolerance must be a number > 0, got {tolerance!r}.")
    y0, y1 = bimodal_branches(x)
    distance = torch.minimum((samples - y0[:, None]).abs(), (samples - y1[:, None]).abs())
    return float((distance > tolerance).float().mean())


def calibration_offset(frequencies: dict[str, float], pi: float) -> float:
    """Mean over the regions of ``|mode_frequency - pi|``.

    Args:
        frequencies: ``{region key: frequency of the b = 1 branch}``, non-empty, values in ``[0, 1]``.
        pi: the true ``P(b = 1)``.
    """
    _check_probability("pi", pi)
    if not isinstance(frequencies, dict) or not frequencies:
        raise ValueError("frequencies must be a non-empty dict of region -> frequency.")
    for key, value in frequencies.items():
        _check_probability(f"frequencies[{key!r}]", value)
    return sum(abs(float(v) - pi) for v in frequencies.values()) / len(frequencies)
