"""Training and evaluation engines of CAR, on MONAI's engines (ignite underneath).

- :class:`CalibrationTrainer`: stage 1, F alone with masked cross entropy (a MONAI ``SupervisedTrainer``).
- :class:`RefinementTrainer`: stage 2, G and D (F frozen or joint), a MONAI ``Trainer`` like ``AdversarialTrainer``.
- :class:`CAREvaluator`: F once and G with S draws per case; GED, HM-IoU, soft-target ECE and the
  fidelity report of the hard samples over the whole set.
- :func:`known_distribution_metrics`: the evaluator's metrics where the label distribution is known (mode-weighted
  GED and its true-distribution control, per-class calibration offsets, exact-target ECE, sharpness).
- :class:`StageResume`: whether a stage of a multi-stage training is skipped, resumed from its latest checkpoint or
  trained afresh (one command resumes a crashed training).
"""

from __future__ import annotations

from monai_car.utils.enums import RefinementKeys  # re-exported: the stage-2 trainer's output keys
from monai_car.utils.rng import isolated_rng  # re-exported: the engines' per-iteration RNG isolation

from .base import ResumableTrainerMixin
from .calibration_trainer import CalibrationTrainer
from .ddp_adapters import DistributedRefiner, LogitsForward
from .evaluator import SKIPPED_BATCH_KEY, CAREvaluator, lower_is_better
from .known_distribution_metrics import (
    KEY_METRICS,
    ControlOffsetHandler,
    ControlSamplesOutput,
    KnownDistributionHandler,
    ModesOutput,
    known_distribution_metrics,
)
from .metric_handlers import (
    CalibrationOutput,
    CARMetricHandler,
    FidelityMetricHandler,
    FidelityOutput,
    SampleMeanOutput,
    SamplesOutput,
    default_car_metrics,
)
from .refinement_trainer import GENERATOR_LOSSES, GeneratorUpdate, RefinementTrainer
from .stage_resume import FRESH, RESUME, SKIP, StageResume, file_digest
from .utils import BatchCheck, InvalidBatchError, check_batch, select_cases

__all__ = [
    "FRESH",
    "GENERATOR_LOSSES",
    "RESUME",
    "SKIP",
    "SKIPPED_BATCH_KEY",
    "BatchCheck",
    "CAREvaluator",
    "CARMetricHandler",
    "CalibrationOutput",
    "CalibrationTrainer",
    "KEY_METRICS",
    "ControlOffsetHandler",
    "ControlSamplesOutput",
    "DistributedRefiner",
    "FidelityMetricHandler",
    "FidelityOutput",
    "GeneratorUpdate",
    "InvalidBatchError",
    "KnownDistributionHandler",
    "LogitsForward",
    "ModesOutput",
    "RefinementKeys",
    "RefinementTrainer",
    "ResumableTrainerMixin",
    "SampleMeanOutput",
    "SamplesOutput",
    "StageResume",
    "check_batch",
    "default_car_metrics",
    "file_digest",
    "isolated_rng",
    "known_distribution_metrics",
    "lower_is_better",
    "select_cases",
]
