"""Figure helpers: atomic PNG files and RGB arrays, with matplotlib's Agg canvas (no pyplot, no GUI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from monai_car.utils.atomic import atomic_file

__all__ = ["new_figure", "save_figure_atomic", "figure_to_array"]


def new_figure(width: float, height: float, dpi: int = 100) -> Figure:
    """A figure drawn by the Agg canvas (works headless; does not touch pyplot's global state)."""
    if width <= 0 or height <= 0 or dpi <= 0:
        raise ValueError(f"figure size and dpi must be positive, got {width} x {height} in at {dpi} dpi.")
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure_atomic(fig: Figure, path: str | Path, dpi: int | None = None) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (temp file in the same folder, then ``os.replace``).

    The parent folder is created. On failure no file (and no temp file) is left behind and an existing ``path``
    is untouched. The file gets the permissions of one made by ``open()`` (``0o666 & ~umask``).

    Returns:
        the path written.
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}.")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: only PNG output is supported; give a file name ending in .png.")
    with atomic_file(path, suffix=".png") as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi if dpi is not None else fig.dpi)
    return path


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` to an ``(H, W, 3)`` uint8 RGB array (for TensorBoard: ``add_image(..., dataformats="HWC")``)."""
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}.")
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.array(canvas.buffer_rgba(), dtype=np.uint8)[..., :3].copy()
