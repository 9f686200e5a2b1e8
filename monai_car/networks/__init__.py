from __future__ import annotations

from .blocks import NoiseInjection
from .export import EXPORT_FORMAT, METADATA_FILE, CARSampler, export_carnet, load_exported_carnet
from .nets import (
    BlackBoxOneHot,
    CalibrationConvNet,
    CalibrationSegNet,
    CARDiscriminator,
    CARNet,
    MultiSampleRefiner,
    RefinementUNet,
    load_bundle_network,
)

__all__ = [
    "BlackBoxOneHot",
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
    "load_bundle_network",
    "load_exported_carnet",
]
