from __future__ import annotations

from .blocks import NoiseInjection
from .export import EXPORT_FORMAT, METADATA_FILE, CARSampler, export_carnet, load_exported_carnet
from .nets import CalibrationConvNet, CalibrationSegNet, CARDiscriminator, CARNet, MultiSampleRefiner, RefinementUNet

__all__ = [
    "CARDiscriminator",
    "CARNet",
    "CARSampler",
    "CalibrationConvNet",
    "CalibrationSegNet",
    "EXPORT_FORMAT",
    "METADATA_FILE",
    "MultiSampleRefiner",
    "NoiseInjection",
    "RefinementUNet",
    "export_carnet",
    "load_exported_carnet",
]
