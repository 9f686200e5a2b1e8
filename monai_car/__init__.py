"""monai-car: Calibrated Adversarial Refinement for calibrated stochastic segmentation, built on MONAI."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
