"""Research artefacts built on :mod:`monai_car`, kept out of the installed library (run them from the repository root).

- the paper's 1D bimodal regression experiment (section 5.1), with its own training loop:
  ``python -m experiments.bimodal_regression`` (results and how to reproduce them: ``docs/bimodal_regression``);
- :mod:`experiments.demo_sampling`: draws from an untrained ``CARNet``, shapes, timing and a picture
  (``python -m experiments.demo_sampling``).
"""

from __future__ import annotations

from .bimodal_data import (
    BIMODAL_REGIONS,
    bimodal_branches,
    calibration_offset,
    evaluation_grid,
    mode_frequency,
    sample_bimodal,
)
from .bimodal_summary import format_summary_markdown, summarize_runs
from .bimodal_sweep import PAPER_PIS, PAPER_SIGMAS, run_experiment, run_sweep
from .bimodal_train import BimodalConfig, BimodalNets, BimodalRun, build_nets, evaluate_calibration, train_bimodal

__all__ = [
    "BIMODAL_REGIONS",
    "BimodalConfig",
    "BimodalNets",
    "BimodalRun",
    "PAPER_PIS",
    "PAPER_SIGMAS",
    "bimodal_branches",
    "build_nets",
    "calibration_offset",
    "evaluate_calibration",
    "evaluation_grid",
    "format_summary_markdown",
    "mode_frequency",
    "run_experiment",
    "run_sweep",
    "sample_bimodal",
    "summarize_runs",
    "train_bimodal",
]
