"""Deterministic synthetic lung CT appearance around real grader masks (for the embedded demo data set).

The images are synthetic; only the masks are real. A patch is lung parenchyma (about -860 HU with smooth
low-frequency variation), a few vessels (tubes of blood density with partial-volume edges), sometimes a chest wall,
and the nodule, whose density follows the graders' agreement: the fraction of the four LIDC readers marking each
voxel, slightly blurred, blends the lung towards the nodule's solid density, so a voxel all four readers marked is
solid and one marked by a single reader is faint (ground-glass-like). CT-like noise is added last.

Arrays are ``[row, column, slice]`` (pylidc's layout), spacing ``(row, column, slice)`` in mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.special import erfc

__all__ = ["LUNG_HU", "VESSEL_HU", "WALL_HU", "render_ct"]

LUNG_HU = -860.0
VESSEL_HU = 40.0
WALL_HU = 30.0


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def render_ct(
    agreement: np.ndarray,
    lesion_hu: float | np.ndarray,
    spacing: Sequence[float],
    rng: np.random.Generator,
    avoid: Sequence[tuple[Sequence[float], float]] = (),
    num_vessels: tuple[int, int] = (3, 7),
    wall_probability: float = 0.3,
    noise_hu: float = 18.0,
) -> np.ndarray:
    """Render a synthetic CT patch in HU (float32) around lesions given by their graders' agreement.

    Args:
        agreement: ``(R, C, S)`` in [0, 1], the fraction of graders marking each voxel (0 outside lesions).
        lesion_hu: solid density of the lesions, a number or an ``(R, C, S)`` array (one value per lesion).
        spacing: ``(row, column, slice)`` voxel size in mm.
        rng: the random generator (all randomness comes from it: same state, same image).
        avoid: ``[(centre_voxel (3,), radius_mm)]`` spheres vessels and the chest wall keep clear of (the lesions).
        num_vessels: ``[low, high)`` range of the number of vessels.
        wall_probability: chance of a chest wall along one side of the patch.
        noise_hu: standard deviation of the noise.

    Returns:
        ``(R, C, S)`` float32 HU.
    """
    agreement = np.asarray(agreement, dtype=np.float32)
    if agreement.ndim != 3:
        raise ValueError(f"agreement must be (rows, columns, slices), got shape {agreement.shape}.")
    if agreement.size and (agreement.min() < 0 or agreement.max() > 1):
        raise ValueError("agreement must lie in [0, 1].")
    spacing = np.asarray(spacing, dtype=float)
    if spacing.shape != (3,) or (spacing <= 0).any():
        raise ValueError(f"spacing must be 3 positive numbers, got {spacing}.")
    shape = agreement.shape
    in_plane = 12.0 / spacing[0]
    low = ndimage.gaussian_filter(rng.normal(size=shape), (in_plane, in_plane, max(4.0 / spacing[2], 0.5)))
    low *= 25.0 / max(float(low.std()), 1e-6)
    hu = (LUNG_HU + low).astype(np.float32)

    axes = [np.arange(n, dtype=np.float32) * np.float32(sp) for n, sp in zip(shape, spacing)]
    extent = np.array(shape) * spacing
    spheres = [(np.asarray(c, dtype=float) * spacing, float(r)) for c, r in avoid]
    edge = 0.5 * float(spacing[:2].min())
    for _ in range(int(rng.integers(*num_vessels))):
        for _attempt in range(20):
            point, direction, radius = rng.uniform(0, 1, 3) * extent, _unit(rng), float(rng.uniform(0.6, 2.0))
            clear = all(np.linalg.norm(np.cross(c - point, direction)) > r + radius + 2.0 for c, r in spheres)
            if clear:
                break
        else:
            continue
        rel = [
            (a - np.float32(p)).reshape([-1 if i == d else 1 for i in range(3)])
            for d, (a, p) in enumerate(zip(axes, point))
        ]
        along = rel[0] * direction[0] + rel[1] * direction[1] + rel[2] * direction[2]
        dist = np.sqrt(np.maximum(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2 - along**2, 0.0))
        weight = 0.5 * erfc((dist - radius) / edge)
        hu += (weight * (VESSEL_HU - LUNG_HU)).astype(np.float32)
    hu = np.minimum(hu, VESSEL_HU + 30.0)

    if rng.uniform() < wall_probability:
        axis, sign = int(rng.integers(2)), float(rng.choice([-1.0, 1.0]))
        line = axes[axis] if sign > 0 else np.float32(extent[axis]) - axes[axis]
        coord = line.reshape([-1 if i == axis else 1 for i in range(3)])
        farthest = max(((c[axis] if sign > 0 else extent[axis] - c[axis]) + r for c, r in spheres), default=0.0)
        start = max(float(rng.uniform(0.55, 0.8)) * extent[axis], farthest + 6.0)
        if start < extent[axis] - 4.0:
            wall = 1.0 / (1.0 + np.exp(-(coord - start) / 0.8))  # 0 on the lung side, 1 beyond ``start``
            hu = (hu * (1.0 - wall) + WALL_HU * wall).astype(np.float32)

    soft = ndimage.gaussian_filter(agreement, (0.8, 0.8, 0.0))
    hu = hu * (1.0 - soft) + np.asarray(lesion_hu, dtype=np.float32) * soft
    noise = ndimage.gaussian_filter(rng.normal(size=shape), (0.6, 0.6, 0.0))
    noise *= noise_hu / max(float(noise.std()), 1e-6)
    return (hu + noise).astype(np.float32)
