"""Evaluation against a known label distribution (the modified Cityscapes, SPEC sections 3 and 4).

Each switchable class ``switchable[i]`` of an image turns into its copy ``copies[i]`` with probability ``p_i``,
independently (one Bernoulli per image and class). So an image whose label map holds the original classes has
``2^n`` ground-truth *modes* (32 for the 5 Cityscapes flips), mode ``m`` having probability
``w(m) = prod_i (p_i if m_i else 1 - p_i)``: :func:`switchable_modes` and :func:`mode_label_maps` build them for the
mode-weighted GED (:func:`~monai_car.metrics.compute_mode_weighted_ged`).

Because the flip probabilities are known, calibration is measured exactly, per switchable class
(:mod:`monai_car.metrics.calibration_offset`).
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Sequence

import torch

from monai_car.utils.cityscapes_classes import COPY_IDS, FLIP_PROBABILITIES, SWITCHABLE_TRAIN_IDS

from .utils import as_label_maps, as_plain_tensor

__all__ = [
    "check_flip_probabilities",
    "check_label_map",
    "check_switchable_layout",
    "mode_index",
    "mode_label_maps",
    "switchable_modes",
    "unflip_label",
]


def check_flip_probabilities(flip_probabilities: Sequence[float], n: int | None = None) -> torch.Tensor:
    """``(n,)`` float64 flip probabilities, each in ``[0, 1]`` (and ``n`` of them when ``n`` is given), or fail."""
    if isinstance(flip_probabilities, (str, bytes)) or not isinstance(flip_probabilities, Sequence):
        raise ValueError(f"flip_probabilities must be a sequence of floats, got {flip_probabilities!r}.")
    if len(flip_probabilities) == 0:
        raise ValueError("flip_probabilities is empty: give one probability per switchable class.")
    if not all(isinstance(p, numbers.Real) and not isinstance(p, bool) for p in flip_probabilities):
        raise ValueError(f"flip_probabilities must hold real numbers, got {flip_probabilities!r}.")
    probs = torch.tensor([float(p) for p in flip_probabilities], dtype=torch.float64)
    if not bool(((probs >= 0) & (probs <= 1)).all()):
        raise ValueError(f"flip_probabilities must be in [0, 1], got {list(flip_probabilities)}.")
    if n is not None and probs.numel() != n:
        raise ValueError(
            f"flip_probabilities has {probs.numel()} entries but there are {n} switchable classes: give one per class."
        )
    return probs


def check_switchable_layout(switchable: Sequence[int], copies: Sequence[int]) -> tuple[list[int], list[int]]:
    """Validate ``n`` distinct switchable classes and ``n`` distinct copies disjoint from them."""
    out = []
    for name, ids in (("switchable", switchable), ("copies", copies)):
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) or len(ids) == 0:
            raise ValueError(f"{name} must be a non-empty sequence of class ids, got {ids!r}.")
        if not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 0 for c in ids):
            raise ValueError(f"{name} must hold non-negative int class ids, got {ids!r}.")
        ids = [int(c) for c in ids]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{name} repeats a class id: {ids}.")
        out.append(ids)
    switchable, copies = out
    if len(copies) != len(switchable):
        raise ValueError(f"copies {copies} must give one copy per switchable class {switchable} (lengths differ).")
    both = sorted(set(switchable) & set(copies))
    if both:
        raise ValueError(f"classes {both} are both switchable and a copy; a copy must be a class of its own.")
    return switchable, copies


def switchable_modes(flip_probabilities: Sequence[float] = FLIP_PROBABILITIES) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``2^n`` combinations of ``n`` independent flips and their probabilities.

    Mode ``m`` flips class ``i`` when bit ``n - 1 - i`` of ``m`` is set (``m = sum_i flipped_i 2^(n-1-i)``): mode 0
    flips nothing, the last mode flips every class (the order of ``itertools.product((False, True), repeat=n)``).

    Args:
        flip_probabilities: ``(n,)`` probability that class ``i`` turns into its copy, each in ``[0, 1]``
            (default: the modified Cityscapes' 8/17, 7/17, 6/17, 5/17, 4/17).

    Returns:
        ``(modes, weights)``: ``(2^n, n)`` bool (``True`` where the class is flipped) and ``(2^n,)`` float64
        ``w(m) = prod_i (p_i if m_i else 1 - p_i)``, summing to 1.

    Raises:
        ValueError: on an empty sequence, non-numbers or probabilities outside ``[0, 1]``.
    """
    probs = check_flip_probabilities(flip_probabilities)
    modes = torch.tensor(list(itertools.product((False, True), repeat=probs.numel())), dtype=torch.bool)
    weights = torch.where(modes, probs, 1.0 - probs).prod(dim=1)
    return modes, weights


def mode_index(flips: torch.Tensor) -> torch.Tensor:
    """The index in :func:`switchable_modes` of recorded flips (e.g. ``RandSwitchableClassFlipd``'s ``flip_mode``).

    Args:
        flips: ``(..., n)`` bool (or 0/1) flips.

    Returns:
        ``(...)`` int64 mode indices in ``[0, 2^n)``.
    """
    flips = as_plain_tensor(flips, "flips")
    if flips.ndim == 0 or flips.shape[-1] == 0:
        raise ValueError(f"flips must be (..., n) with n >= 1 flips, got shape {tuple(flips.shape)}.")
    if flips.dtype != torch.bool and not bool(((flips == 0) | (flips == 1)).all()):
        raise ValueError("flips must be bool (or 0/1): True where a class turned into its copy.")
    n = flips.shape[-1]
    powers = 2 ** torch.arange(n - 1, -1, -1, device=flips.device, dtype=torch.int64)
    return (flips.long() * powers).sum(dim=-1)


def check_label_map(label: torch.Tensor, name: str) -> torch.Tensor:
    """A ``(B, 1, *spatial)`` ground-truth label map as int64, or fail naming ``name``."""
    label = as_plain_tensor(label, name)
    if label.ndim < 3 or label.shape[1] != 1:
        raise ValueError(
            f"{name} must be a (B, 1, *spatial) label map (one ground truth per image), got {tuple(label.shape)}."
        )
    return as_label_maps(label, name)


def unflip_label(
    label: torch.Tensor, switchable: Sequence[int] = SWITCHABLE_TRAIN_IDS, copies: Sequence[int] = COPY_IDS
) -> torch.Tensor:
    """Undo the flips of a label map: every copy class back to its original.

    Args:
        label: ``(B, 1, *spatial)`` integer label map, flipped or not.
        switchable: the ``n`` original class ids (default: the Cityscapes trainIds 1, 11, 13, 8, 0).
        copies: the ``n`` copy ids, ``copies[i]`` the copy of ``switchable[i]`` (default 19 .. 23).

    Returns:
        ``(B, 1, *spatial)`` int64 label map holding no copy class.
    """
    switchable, copies = check_switchable_layout(switchable, copies)
    label = check_label_map(label, "label")
    out = label.clone()
    for original, copy in zip(switchable, copies):
        out[label == copy] = original
    return out


def mode_label_maps(
    label: torch.Tensor,
    switchable: Sequence[int] = SWITCHABLE_TRAIN_IDS,
    copies: Sequence[int] = COPY_IDS,
    modes: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ground-truth label map of every mode of an image whose switchable classes are unflipped.

    In mode ``m`` the pixels of ``switchable[i]`` become ``copies[i]`` where ``modes[m, i]``; other labels (void
    included) are kept.

    Args:
        label: ``(B, 1, *spatial)`` integer label map with the original classes (no copy class: pass a flipped map
            through :func:`unflip_label` first).
        switchable: the ``n`` original class ids (default: Cityscapes trainIds 1, 11, 13, 8, 0).
        copies: the ``n`` copy ids, same order (default 19 .. 23).
        modes: ``(M, n)`` bool flips, default all ``2^n`` of :func:`switchable_modes` (its order).

    Returns:
        ``(B, M, *spatial)`` int64 label maps, the ``y`` of :func:`~monai_car.metrics.compute_mode_weighted_ged`.

    Raises:
        ValueError: on a bad layout, a label map that is not ``(B, 1, *spatial)`` or holds copy classes, or modes of
            the wrong shape.
    """
    switchable, copies = check_switchable_layout(switchable, copies)
    label = check_label_map(label, "label")
    present = [c for c in copies if bool((label == c).any())]
    if present:
        raise ValueError(
            f"label already holds copy classes {present}: the modes are built from the unflipped label map; pass it "
            "through monai_car.metrics.unflip_label first."
        )
    n = len(switchable)
    if modes is None:
        modes = torch.tensor(list(itertools.product((False, True), repeat=n)), dtype=torch.bool)
    modes = as_plain_tensor(modes, "modes")
    if modes.ndim != 2 or modes.shape[1] != n or modes.shape[0] == 0:
        raise ValueError(f"modes must be (M, {n}) flips, one column per switchable class, got {tuple(modes.shape)}.")
    if modes.dtype != torch.bool and not bool(((modes == 0) | (modes == 1)).all()):
        raise ValueError("modes must be bool (or 0/1): True where a class turns into its copy.")
    modes = modes.to(device=label.device, dtype=torch.bool)
    out = label.expand(-1, modes.shape[0], *label.shape[2:]).clone()
    view = (1, modes.shape[0]) + (1,) * (label.ndim - 2)
    for i, (original, copy) in enumerate(zip(switchable, copies)):
        out = torch.where((label == original) & modes[:, i].reshape(view), copy, out)
    return out
