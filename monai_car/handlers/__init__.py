from __future__ import annotations

from .checkpoint_loader import StrictCheckpointLoader
from .checkpoint_saver import AtomicCheckpointSaver
from .discriminator_schedule import DiscriminatorSchedule
from .evaluation_report import EvaluationReportWriter, write_text_atomic
from .evaluation_summary import format_evaluation_summary
from .known_distribution_report import KnownDistributionReportWriter
from .sample_set_writer import SAMPLE_SET_FILES, SampleSetWriter, write_sample_set
from .staged_output import StagedOutputDir
from .tensorboard_montage import TensorBoardMontageHandler

__all__: list[str] = [
    "format_evaluation_summary",
    "SAMPLE_SET_FILES",
    "AtomicCheckpointSaver",
    "DiscriminatorSchedule",
    "EvaluationReportWriter",
    "KnownDistributionReportWriter",
    "SampleSetWriter",
    "StagedOutputDir",
    "StrictCheckpointLoader",
    "TensorBoardMontageHandler",
    "write_sample_set",
    "write_text_atomic",
]
