"""Pictures of sample sets and calibration: case montages, reliability diagrams and per-class calibration bars
(matplotlib, Agg canvas)."""

from __future__ import annotations

from .calibration_bars import calibration_bars_figure, save_calibration_bars
from .montage import montage_figure, render_montage, sample_set_figure, save_montage, save_sample_set_montage
from .reliability import (
    expected_calibration_error,
    reliability_diagram_figure,
    reliability_table,
    save_reliability_diagram,
)
from .scene_montage import save_scene_montage, scene_montage_figure
from .utils import figure_to_array, new_figure, save_figure_atomic

__all__ = [
    "calibration_bars_figure",
    "expected_calibration_error",
    "figure_to_array",
    "montage_figure",
    "new_figure",
    "reliability_diagram_figure",
    "reliability_table",
    "render_montage",
    "sample_set_figure",
    "save_calibration_bars",
    "save_figure_atomic",
    "save_montage",
    "save_sample_set_montage",
    "save_reliability_diagram",
    "save_scene_montage",
    "scene_montage_figure",
]
