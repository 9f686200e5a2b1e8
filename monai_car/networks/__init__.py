from __future__ import annotations

from .blocks import NoiseInjection
from .nets import CalibrationConvNet, CalibrationSegNet, CARDiscriminator, CARNet, RefinementUNet

__all__ = ["CARDiscriminator", "CARNet", "CalibrationConvNet", "CalibrationSegNet", "NoiseInjection", "RefinementUNet"]
