"""Metrics of stochastic segmentation: GED, Hungarian-matched IoU, mode-weighted GED, soft-target ECE, the fidelity
report of hard samples (sharpness, lesion-presence and pixel calibration, F's fit) and, where the label distribution
is known (modified Cityscapes), its modes and the per-class calibration offsets."""

from __future__ import annotations

from .calibration import (
    SoftTargetCalibrationErrorMetric,
    calibration_error_from_bins,
    calibration_pixel_totals,
    compute_soft_target_calibration_bins,
    compute_soft_target_calibration_error,
    reliability_table_from_bins,
)
from .calibration_offset import (
    CalibrationOffsetMetric,
    calibration_offsets_from_sums,
    compute_calibration_offset_sums,
)
from .fidelity import (
    FIDELITY_KEYS,
    FidelityMetric,
    compute_fidelity_terms,
    fidelity_from_terms,
    presence_ece_noise_floor,
)
from .generalized_energy_distance import (
    GeneralizedEnergyDistanceMetric,
    compute_ged_terms,
    compute_generalized_energy_distance,
)
from .hungarian_matched_iou import (
    HungarianMatchedIoUMetric,
    compute_hungarian_matched_iou,
    hungarian_matched_iou_from_matrix,
)
from .known_distribution import mode_index, mode_label_maps, switchable_modes, unflip_label
from .known_distribution_calibration import KnownDistributionCalibrationMetric, known_distribution_targets
from .mode_weighted_ged import ModeWeightedGEDMetric, compute_mode_weighted_ged, compute_mode_weighted_ged_terms
from .pairwise_iou import compute_pairwise_class_iou, compute_pairwise_iou, compute_pairwise_iou_distance
from .utils import as_plain_tensor, probabilities_to_labels, reduce_per_image

__all__ = [
    "CalibrationOffsetMetric",
    "FIDELITY_KEYS",
    "FidelityMetric",
    "GeneralizedEnergyDistanceMetric",
    "HungarianMatchedIoUMetric",
    "KnownDistributionCalibrationMetric",
    "ModeWeightedGEDMetric",
    "SoftTargetCalibrationErrorMetric",
    "as_plain_tensor",
    "calibration_error_from_bins",
    "calibration_offsets_from_sums",
    "calibration_pixel_totals",
    "compute_calibration_offset_sums",
    "compute_fidelity_terms",
    "compute_ged_terms",
    "compute_generalized_energy_distance",
    "compute_hungarian_matched_iou",
    "compute_mode_weighted_ged",
    "compute_mode_weighted_ged_terms",
    "compute_pairwise_class_iou",
    "compute_pairwise_iou",
    "compute_pairwise_iou_distance",
    "compute_soft_target_calibration_bins",
    "compute_soft_target_calibration_error",
    "fidelity_from_terms",
    "hungarian_matched_iou_from_matrix",
    "known_distribution_targets",
    "mode_index",
    "mode_label_maps",
    "presence_ece_noise_floor",
    "probabilities_to_labels",
    "reduce_per_image",
    "reliability_table_from_bins",
    "switchable_modes",
    "unflip_label",
]
