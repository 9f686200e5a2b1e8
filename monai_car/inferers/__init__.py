from __future__ import annotations

from .lesion_locations import Lesion, lesions_from_csv, lesions_from_mask, lesions_from_pylidc, world_to_voxel
from .lesion_sampler import SUMMARY_COLUMNS, LesionPrediction, LesionSampleSetPredictor, load_ct_volume
from .sampling import SAMPLING_OUTPUTS, CARSamplingInferer
from .scene_sampler import SceneSampleWriter
from .studies import LESION_SOURCES, build_studies, find_ct_inputs, study_id_of
from .volume_geometry import cut_slab, reorient, slab_affine, voxel_spacing

__all__ = [
    "SAMPLING_OUTPUTS",
    "CARSamplingInferer",
    "LESION_SOURCES",
    "build_studies",
    "find_ct_inputs",
    "study_id_of",
    "SUMMARY_COLUMNS",
    "Lesion",
    "LesionPrediction",
    "LesionSampleSetPredictor",
    "SceneSampleWriter",
    "cut_slab",
    "lesions_from_csv",
    "lesions_from_mask",
    "lesions_from_pylidc",
    "load_ct_volume",
    "reorient",
    "slab_affine",
    "voxel_spacing",
    "world_to_voxel",
]
