from __future__ import annotations

from .adversarial import (
    NonSaturatingDiscriminatorLoss,
    NonSaturatingGeneratorLoss,
    discriminator_adversarial_loss,
    generator_adversarial_loss,
    r1_penalty,
)
from .calibrated_sharpening import calibrated_sharpening_loss, calibrated_sharpening_targets
from .calibration import CALIBRATION_ESTIMATORS, CalibrationLoss, GaussianCalibrationLoss
from .cross_entropy import MaskedCrossEntropyLoss, sharpening_loss

__all__ = [
    "CALIBRATION_ESTIMATORS",
    "CalibrationLoss",
    "GaussianCalibrationLoss",
    "MaskedCrossEntropyLoss",
    "NonSaturatingDiscriminatorLoss",
    "NonSaturatingGeneratorLoss",
    "calibrated_sharpening_loss",
    "calibrated_sharpening_targets",
    "discriminator_adversarial_loss",
    "generator_adversarial_loss",
    "r1_penalty",
    "sharpening_loss",
]
