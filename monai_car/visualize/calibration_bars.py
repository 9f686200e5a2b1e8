"""Calibration bar chart of the switchable classes (the CAR paper's Figure 5): true vs predicted flip probabilities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from monai_car.utils.cityscapes_classes import COPY_NAMES

from .utils import new_figure, save_figure_atomic

__all__ = ["calibration_bars_figure", "save_calibration_bars"]

_TRUE_COLOR = "#4C72B0"
_COLORS = ("#DD8452", "#55A868", "#8172B3", "#C44E52", "#937860", "#DA8BC3")


def _probabilities(values: object, name: str, n: int | None, allow_nan: bool) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a sequence of probabilities, got {values!r}.") from e
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name} must be a non-empty 1D sequence (one probability per class), got shape {v.shape}.")
    if n is not None and v.size != n:
        raise ValueError(f"{name} has {v.size} values but there are {n} classes: give one per class.")
    finite = np.isfinite(v)
    if not allow_nan and not finite.all():
        raise ValueError(f"{name} must hold finite probabilities, got {v.tolist()}.")
    if np.isinf(v).any() or (v[finite] < 0).any() or (v[finite] > 1).any():
        raise ValueError(f"{name} must hold probabilities in [0, 1] (NaN for a class not measured), got {v.tolist()}.")
    return v


def calibration_bars_figure(
    true_probabilities: Sequence[float] | torch.Tensor,
    predicted: Mapping[str, Sequence[float] | torch.Tensor],
    class_names: Sequence[str] = COPY_NAMES,
    title: str = "Calibration of the switchable classes",
    ylabel: str = "probability of the copy class",
    dpi: int = 100,
) -> Figure:
    """Grouped bars per switchable class: the true flip probability, then each model's predicted probability.

    Each model's legend entry gives its mean and worst calibration offset ``|true - predicted|`` (percent) over the
    classes it was measured on; a class with a NaN prediction has no bar for that model.

    Args:
        true_probabilities: ``(n,)`` the known flip probabilities (8/17 .. 4/17 on the modified Cityscapes).
        predicted: ``{label: (n,) probabilities}``, e.g. ``{"F (mean probability)": ..., "G (16 samples)": ...}``
            from :func:`~monai_car.metrics.calibration_offsets_from_sums` (``f_predicted``, ``g_predicted``), and a
            control; 1 to 6 models, in legend order. NaN marks a class not measured.
        class_names: ``(n,)`` names under the bars (default: the copies, "sidewalk2" .. "road2").
        title: the figure title.
        ylabel: the y axis label.
        dpi: resolution.

    Returns:
        the figure (Agg canvas).

    Raises:
        ValueError: on lengths that differ from ``class_names``, values outside ``[0, 1]``, no or too many models, or a
            model whose every value is NaN.
    """
    if isinstance(class_names, str) or not isinstance(class_names, Sequence) or len(class_names) == 0:
        raise ValueError(f"class_names must be a non-empty sequence of names, got {class_names!r}.")
    n = len(class_names)
    true = _probabilities(true_probabilities, "true_probabilities", n, allow_nan=False)
    if not isinstance(predicted, Mapping) or not 1 <= len(predicted) <= len(_COLORS):
        raise ValueError(f"predicted must be a dict of 1 to {len(_COLORS)} models {{label: (n,) probabilities}}.")
    models = {}
    for label, values in predicted.items():
        v = _probabilities(values, f"predicted[{label!r}]", n, allow_nan=True)
        if np.isnan(v).all():
            raise ValueError(f"predicted[{label!r}] is NaN for every class: nothing was measured for this model.")
        models[str(label)] = v

    fig = new_figure(max(5.0, 1.1 * n + 2.0), 4.0, dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(n, dtype=np.float64)
    width = 0.8 / (len(models) + 1)
    start = -0.4 + width / 2
    ax.bar(x + start, true, width=width, color=_TRUE_COLOR, edgecolor="black", linewidth=0.5, label="true")
    for j, (label, v) in enumerate(models.items(), start=1):
        offset = np.abs(v - true)[~np.isnan(v)]
        legend = f"{label} (offset mean {100 * offset.mean():.1f} %, worst {100 * offset.max():.1f} %)"
        shown = ~np.isnan(v)
        ax.bar(
            (x + start + j * width)[shown],
            v[shown],
            width=width,
            color=_COLORS[j - 1],
            edgecolor="black",
            linewidth=0.5,
            label=legend,
        )
    ax.set_xticks(x)
    ax.set_xticklabels([str(c) for c in class_names])
    top = float(np.nanmax(np.concatenate([true] + list(models.values()))))
    ax.set_ylim(0.0, min(1.0, 1.35 * top + 0.05))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return fig


def save_calibration_bars(
    path: str | Path,
    true_probabilities: Sequence[float] | torch.Tensor,
    predicted: Mapping[str, Sequence[float] | torch.Tensor],
    **kwargs,
) -> Path:
    """Draw :func:`calibration_bars_figure` (same keyword arguments) and write it to ``path`` (PNG) atomically."""
    return save_figure_atomic(calibration_bars_figure(true_probabilities, predicted, **kwargs), path)
