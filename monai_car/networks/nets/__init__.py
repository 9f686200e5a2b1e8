from __future__ import annotations

from .calibration_convnet import CalibrationConvNet
from .carnet import CARNet
from .discriminator import CARDiscriminator
from .refinement_unet import RefinementUNet
from .segnet import CalibrationSegNet

__all__ = ["CARDiscriminator", "CARNet", "CalibrationConvNet", "CalibrationSegNet", "RefinementUNet"]
