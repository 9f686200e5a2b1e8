"""Ignite glue for the CAR metric classes: MONAI's IgniteMetricHandler reading the evaluator's output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from monai.utils import IgniteInfo, min_version, optional_import

from monai_car.metrics import (
    GeneralizedEnergyDistanceMetric,
    HungarianMatchedIoUMetric,
    SoftTargetCalibrationErrorMetric,
)
from monai_car.utils.enums import CarKeys

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["CARMetricHandler", "CalibrationOutput", "SampleMeanOutput", "SamplesOutput", "default_car_metrics"]


class SamplesOutput:
    """``(samples[:, :n], labels)`` from an evaluator output: ``(B, n, K, *spatial)``, ``(B, R, *spatial)``."""

    def __init__(self, num_samples: int | None = None) -> None:
        self.num_samples = num_samples

    def __call__(self, output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        samples = output[CarKeys.SAMPLES]
        if self.num_samples is not None:
            samples = samples[:, : self.num_samples]
        return samples, output[CarKeys.LABEL]


class SampleMeanOutput:
    """``(mean of G's samples, labels)``: ``(B, K, *spatial)`` probabilities, ``(B, R, *spatial)``."""

    def __call__(self, output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return output[CarKeys.SAMPLES].mean(dim=1).clamp(0.0, 1.0), output[CarKeys.LABEL]


class CalibrationOutput:
    """``(F's probabilities, labels)``: ``(B, K, *spatial)``, ``(B, R, *spatial)``."""

    def __call__(self, output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return output[CarKeys.CALIBRATION].clamp(0.0, 1.0), output[CarKeys.LABEL]


class CARMetricHandler(IgniteMetricHandler):
    """MONAI's ``IgniteMetricHandler`` that ignores outputs of fully skipped batches and keeps reliability tables.

    An output holding ``skipped_batch`` (every case of the batch was invalid and skipped, see ``CAREvaluator``) is not
    passed to the metric. A metric with ``reliability_table()`` (the soft-target ECE) also stores its pooled table in
    ``engine.state.reliability_tables[name]`` (lists of floats) when computed. The metric's buffers are gathered
    across DDP ranks by MONAI's ``Cumulative.get_buffer``, so every rank reduces over the whole data set.

    Args:
        metric_fn: a MONAI cumulative metric, called as ``metric_fn(y_pred, y)``.
        output_transform: ``engine.state.output -> (y_pred, y)``.
        save_details: store per-image values in ``engine.state.metric_details``.
    """

    def __init__(self, metric_fn: CumulativeIterationMetric, output_transform: Any, save_details: bool = True) -> None:
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)

    def iteration_completed(self, engine: Engine) -> None:
        output = engine.state.output
        if isinstance(output, Mapping) and output.get("skipped_batch"):
            return
        super().iteration_completed(engine)

    def compute(self) -> Any:
        result = super().compute()
        table_fn = getattr(self.metric_fn, "reliability_table", None)
        if callable(table_fn) and self._engine is not None:
            tables = getattr(self._engine.state, "reliability_tables", None)
            if tables is None:
                tables = {}
                self._engine.state.reliability_tables = tables
            tables[self._name] = {k: v.tolist() for k, v in table_fn().items()}
        return result


def default_car_metrics(
    num_classes: int, ged_sample_counts: Sequence[int] = (), ece_bins: int = 10
) -> tuple[dict[str, CARMetricHandler], dict[str, CARMetricHandler]]:
    """The evaluator's default metrics for binary segmentation (LIDC): key ``{"ged"}`` and the others.

    Returns:
        ``(key_val_metric, additional_metrics)``: ``ged``; ``ged_<n>``, ``hm_iou``, ``ece``, ``ece_calibration``.

    Raises:
        ValueError: for ``num_classes != 2``: GED/HM-IoU compare binary foreground masks; pass your own metrics (e.g.
            ``ModeWeightedGEDMetric``) as ``key_val_metric``.
    """
    if num_classes != 2:
        raise ValueError(
            f"the default CAR metrics compare binary foreground masks (K = 2), but the network has K = {num_classes} "
            "classes; pass key_val_metric / additional_metrics (e.g. ModeWeightedGEDMetric for Cityscapes)."
        )
    key = {"ged": CARMetricHandler(GeneralizedEnergyDistanceMetric(from_probabilities=True), SamplesOutput())}
    extra: dict[str, CARMetricHandler] = {}
    for n in ged_sample_counts:
        ged_n = GeneralizedEnergyDistanceMetric(from_probabilities=True)
        extra[f"ged_{int(n)}"] = CARMetricHandler(ged_n, SamplesOutput(int(n)))
    extra["hm_iou"] = CARMetricHandler(HungarianMatchedIoUMetric(from_probabilities=True), SamplesOutput())
    extra["ece"] = CARMetricHandler(SoftTargetCalibrationErrorMetric(ece_bins), SampleMeanOutput())
    extra["ece_calibration"] = CARMetricHandler(SoftTargetCalibrationErrorMetric(ece_bins), CalibrationOutput())
    return key, extra
