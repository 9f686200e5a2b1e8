from __future__ import annotations

from .black_box import BlackBoxOneHot, load_bundle_network
from .calibration_convnet import CalibrationConvNet
from .carnet import CARNet
from .discriminator import CARDiscriminator
from .protocols import MultiSampleRefiner
from .refinement_unet import RefinementUNet
from .segnet import CalibrationSegNet

__all__ = [
    "BlackBoxOneHot",
    "CARDiscriminator",
    "CARNet",
    "CalibrationConvNet",
    "CalibrationSegNet",
    "MultiSampleRefiner",
    "RefinementUNet",
    "load_bundle_network",
]
