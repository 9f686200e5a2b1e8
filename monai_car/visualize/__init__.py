"""Pictures of sample sets and calibration: case montages and reliability diagrams (matplotlib, Agg canvas)."""

from __future__ import annotations

from .montage import montage_figure, render_montage, sample_set_figure, save_montage, save_sample_set_montage
from .reliability import (
    expected_calibration_error,
    reliability_diagram_figure,
    reliability_table,
    save_reliability_diagram,
)
from .utils import figure_to_array, new_figure, save_figure_atomic

__all__ = [
    "expected_calibration_error",
    "figure_to_array",
    "montage_figure",
    "new_figure",
    "reliability_diagram_figure",
    "reliability_table",
    "render_montage",
    "sample_set_figure",
    "save_figure_atomic",
    "save_montage",
    "save_sample_set_montage",
    "save_reliability_diagram",
]
