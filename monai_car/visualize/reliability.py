"""Reliability diagram (accuracy against confidence per bin) from a per-bin table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .utils import new_figure, save_figure_atomic

__all__ = ["reliability_table", "expected_calibration_error", "reliability_diagram_figure", "save_reliability_diagram"]

_COLUMNS = ("count", "mean_confidence", "accuracy")


def _column(table: Mapping, key: str) -> np.ndarray:
    v = table[key]
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=np.float64).reshape(-1)


def reliability_table(table: Mapping | Sequence[Mapping]) -> dict[str, np.ndarray]:
    """Validate a per-bin table and return it as float64 columns with ``bin_edges``.

    Args:
        table: columns ``{"count": (n,), "mean_confidence": (n,), "accuracy": (n,)}`` (lists, numpy arrays or
            tensors; optional ``"bin_edges": (n + 1,)``, default ``n`` equal bins over [0, 1]), or a list of ``n``
            rows ``{"count", "mean_confidence", "accuracy"}``. Empty bins (``count == 0``) may hold NaN.

    Returns:
        ``{"count", "mean_confidence", "accuracy", "bin_edges"}`` numpy columns.

    Raises:
        KeyError: a column is missing. ValueError: lengths differ, negative counts, no sample at all, values
        outside [0, 1] or NaN in a non-empty bin, or bad edges.
    """
    if isinstance(table, Sequence) and not isinstance(table, (str, bytes)):
        if not table or not all(isinstance(r, Mapping) for r in table):
            raise ValueError("a row-wise table must be a non-empty list of dicts (one per bin).")
        missing = [k for k in _COLUMNS if any(k not in r for r in table)]
        if missing:
            raise KeyError(f"every bin row needs {list(_COLUMNS)}; missing {missing}.")
        table = {k: [r[k] for r in table] for k in _COLUMNS}
    if not isinstance(table, Mapping):
        raise TypeError(f"table must be a dict of columns or a list of rows, got {type(table).__name__}.")
    missing = [k for k in _COLUMNS if k not in table]
    if missing:
        raise KeyError(f"the reliability table needs columns {list(_COLUMNS)}; missing {missing} (has {list(table)}).")
    cols = {k: _column(table, k) for k in _COLUMNS}
    n = cols["count"].size
    if n == 0 or any(c.size != n for c in cols.values()):
        sizes = {k: c.size for k, c in cols.items()}
        raise ValueError(f"columns must be non-empty and of equal length, got sizes {sizes}.")
    count = cols["count"]
    if not np.isfinite(count).all() or (count < 0).any():
        raise ValueError("count must hold finite, non-negative numbers.")
    if count.sum() <= 0:
        raise ValueError("the table holds no sample (all counts are 0).")
    full = count > 0
    for k in ("mean_confidence", "accuracy"):
        v = cols[k][full]
        if not np.isfinite(v).all() or (v < 0).any() or (v > 1).any():
            raise ValueError(f"{k} must be in [0, 1] in every non-empty bin, got {cols[k].tolist()}.")
    edges = _column(table, "bin_edges") if "bin_edges" in table else np.linspace(0.0, 1.0, n + 1)
    if edges.size != n + 1 or not np.isfinite(edges).all() or (np.diff(edges) <= 0).any():
        raise ValueError(f"bin_edges must be {n + 1} increasing numbers, got {edges.tolist()}.")
    cols["bin_edges"] = edges
    return cols


def expected_calibration_error(table: Mapping | Sequence[Mapping]) -> float:
    """ECE in percent: ``100 * sum_b (n_b / N) |accuracy_b - confidence_b|`` over the non-empty bins."""
    t = reliability_table(table)
    full = t["count"] > 0
    w = t["count"][full] / t["count"].sum()
    return float(100.0 * (w * np.abs(t["accuracy"][full] - t["mean_confidence"][full])).sum())


def reliability_diagram_figure(
    table: Mapping | Sequence[Mapping],
    ece_percent: float | None = None,
    title: str = "Reliability diagram",
    xlabel: str = "confidence",
    ylabel: str = "accuracy",
    dpi: int = 100,
) -> Figure:
    """Bars of accuracy per confidence bin, the gap to the diagonal, the diagonal, and the ECE in the title.

    Args:
        table: the per-bin table (see :func:`reliability_table`).
        ece_percent: the ECE to print (percent); computed from the table when ``None``.
        title: title, followed by ``(ECE = x.xxx %, N = n)``.
        xlabel, ylabel: axis labels (e.g. ``"foreground probability"``, ``"fraction of graders"`` for soft targets).
        dpi: resolution.
    """
    t = reliability_table(table)
    if ece_percent is None:
        ece_percent = expected_calibration_error(t)
    elif not np.isfinite(ece_percent) or ece_percent < 0:
        raise ValueError(f"ece_percent must be a finite number >= 0, got {ece_percent}.")
    edges, full = t["bin_edges"], t["count"] > 0
    left, width = edges[:-1][full], np.diff(edges)[full]
    acc, conf = t["accuracy"][full], t["mean_confidence"][full]

    fig = new_figure(4.6, 4.4, dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(left, acc, width=width, align="edge", color="#4C72B0", edgecolor="black", linewidth=0.6)
    ax.bar(
        left,
        conf - acc,
        bottom=acc,
        width=width,
        align="edge",
        color="#DD4444",
        alpha=0.35,
        edgecolor="#AA0000",
        hatch="//",
        linewidth=0.6,
    )
    lo, hi = float(edges[0]), float(edges[-1])
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=1.0)
    ax.set_xlim(lo, hi)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n(ECE = {ece_percent:.3f} %, N = {int(t['count'].sum())})", fontsize=10)
    ax.legend(
        handles=[
            Patch(facecolor="#4C72B0", edgecolor="black", label="accuracy"),
            Patch(facecolor="#DD4444", alpha=0.35, edgecolor="#AA0000", hatch="//", label="gap to confidence"),
            ax.lines[0],
        ],
        labels=["accuracy", "gap to confidence", "perfect calibration"],
        loc="upper left",
        fontsize=8,
    )
    fig.tight_layout()
    return fig


def save_reliability_diagram(path: str | Path, table: Mapping | Sequence[Mapping], **kwargs) -> Path:
    """Draw :func:`reliability_diagram_figure` (same keyword arguments) and write it to ``path`` (PNG) atomically."""
    return save_figure_atomic(reliability_diagram_figure(table, **kwargs), path)
