"""Montage of one multi-class scene: the image, its ground truth, F's prediction and uncertainty, G's samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from monai_car.utils.cityscapes_classes import COPY_IDS, class_colors

from .utils import new_figure, save_figure_atomic

__all__ = ["save_scene_montage", "scene_montage_figure"]


def _array(x: torch.Tensor | np.ndarray, name: str, ndim: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    if not isinstance(x, np.ndarray) or x.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array or tensor, got {getattr(x, 'shape', type(x).__name__)}.")
    return x


def _colour(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``(H, W)`` class ids -> ``(H, W, 3)`` RGB in [0, 1] (ids beyond the palette black)."""
    ids = np.clip(labels.astype(np.int64), 0, len(palette) - 1)
    return palette[ids] / 255.0


def scene_montage_figure(
    image: torch.Tensor | np.ndarray,
    samples: torch.Tensor | np.ndarray,
    calibration_probs: torch.Tensor | np.ndarray | None = None,
    label: torch.Tensor | np.ndarray | None = None,
    num_samples: int = 6,
    title: str = "",
    dpi: int = 100,
) -> Figure:
    """Row 1: the image, the ground truth, F's argmax, F's entropy and the entropy of the samples' frequencies; row 2:
    ``num_samples`` of G's hard samples, in the Cityscapes colours (the copy classes drawn in a paler shade).

    Args:
        image: ``(C, H, W)``; the first 3 channels are shown as RGB in [0, 1] (1 channel: grey).
        samples: ``(S, K, H, W)`` G's probabilities.
        calibration_probs: ``(K, H, W)`` F's probabilities, or None.
        label: ``(1, H, W)`` or ``(H, W)`` ground-truth classes, or None.
        num_samples: samples drawn in row 2 (at most ``S``).
        title: the figure title.
        dpi: resolution.

    Returns:
        the figure.
    """
    img = _array(image, "image", 3)
    probs = _array(samples, "samples", 4)
    if probs.shape[2:] != img.shape[1:]:
        raise ValueError(f"samples {probs.shape} and image {img.shape} must share (H, W).")
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}.")
    palette = class_colors().astype(np.float64)
    if len(palette) < probs.shape[1]:
        palette = np.concatenate([palette, np.zeros((probs.shape[1] - len(palette), 3))])
    for copy in COPY_IDS:  # copies: the original's colour, paler
        if copy < len(palette):
            palette[copy] = 0.45 * palette[copy] + 0.55 * 255.0
    shown = img[:3] if img.shape[0] >= 3 else np.repeat(img[:1], 3, axis=0)
    rgb = np.clip(shown.transpose(1, 2, 0), 0.0, 1.0)
    hard = probs.argmax(axis=1)  # (S, H, W)
    k = probs.shape[1]
    freq = np.stack([(hard == c).mean(axis=0) for c in range(k)])
    ent_g = -(freq * np.log(np.clip(freq, 1e-12, 1.0))).sum(axis=0)
    top: list[tuple[str, np.ndarray, dict]] = [("image", rgb, {})]
    if label is not None:
        lab = _array(label, "label", np.ndim(label))
        if lab.ndim == 3 and lab.shape[0] == 1:
            lab = lab[0]
        if lab.shape != img.shape[1:]:
            raise ValueError(f"label {lab.shape} must be (1, H, W) or (H, W) on the image grid {img.shape[1:]}.")
        top.append(("ground truth", _colour(lab, palette), {}))
    if calibration_probs is not None:
        p = _array(calibration_probs, "calibration_probs", 3)
        top.append(("F: argmax", _colour(p.argmax(axis=0), palette), {}))
        ent_f = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=0)
        top.append(("F: entropy", ent_f, {"cmap": "magma", "vmin": 0.0, "vmax": float(np.log(2.0))}))
    top.append(("samples: entropy", ent_g, {"cmap": "magma", "vmin": 0.0, "vmax": float(np.log(2.0))}))
    n = min(int(num_samples), hard.shape[0])
    cols = max(len(top), n)
    h, w = img.shape[1:]
    fig = new_figure(1.9 * cols * max(w / h, 1.0) / 1.5, 2.0 * 2 + 0.4, dpi=dpi)
    for j, (name, data, kwargs) in enumerate(top):
        ax = fig.add_subplot(2, cols, j + 1)
        ax.imshow(data, interpolation="nearest", **kwargs)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    for j in range(n):
        ax = fig.add_subplot(2, cols, cols + j + 1)
        ax.imshow(_colour(hard[j], palette), interpolation="nearest")
        ax.set_title(f"sample {j + 1}", fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_scene_montage(path: str | Path, image: torch.Tensor | np.ndarray, **kwargs) -> Path:
    """Draw :func:`scene_montage_figure` (same arguments) and write it to ``path`` (PNG) atomically."""
    return save_figure_atomic(scene_montage_figure(image, **kwargs), path)
