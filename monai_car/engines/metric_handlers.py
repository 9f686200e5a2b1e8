"""Ignite glue for the CAR metric classes: MONAI's IgniteMetricHandler reading the evaluator's output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from monai.utils import IgniteInfo, min_version, optional_import

from monai_car.metrics import (
    FidelityMetric,
    GeneralizedEnergyDistanceMetric,
    HungarianMatchedIoUMetric,
    SoftTargetCalibrationErrorMetric,
)
from monai_car.utils.enums import CarKeys

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = [
    "CARMetricHandler",
    "CalibrationOutput",
    "FidelityMetricHandler",
    "FidelityOutput",
    "SampleMeanOutput",
    "SamplesOutput",
    "default_car_metrics",
]


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


class FidelityOutput:
    """``(samples, labels, F's probabilities)`` from an evaluator output, for :class:`FidelityMetricHandler`."""

    def __call__(self, output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return output[CarKeys.SAMPLES], output[CarKeys.LABEL], output.get(CarKeys.CALIBRATION)


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
        if callable(table_fn):
            self._store_tables({self._name: table_fn()})
        return result

    def _store_tables(self, tables: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        """Put reliability tables (name -> column -> tensor) into ``engine.state.reliability_tables`` as lists."""
        if self._engine is None:
            return
        store = getattr(self._engine.state, "reliability_tables", None)
        if store is None:
            store = {}
            self._engine.state.reliability_tables = store
        for name, table in tables.items():
            store[name] = {k: v.tolist() for k, v in table.items()}


class FidelityMetricHandler(CARMetricHandler):
    """Ignite handler of :class:`~monai_car.metrics.FidelityMetric`: the fidelity report of an evaluation.

    ``output_transform`` gives ``(samples, labels, calibration_probs)`` (default :class:`FidelityOutput`). At the end
    of the run every figure of the report goes into ``engine.state.metrics`` under its own key
    (:data:`~monai_car.metrics.FIDELITY_KEYS`: ``sample_sharpness``, ``presence_ece``, ``presence_ece_floor``, ...), so
    that ``StatsHandler``, ``TensorBoardStatsHandler`` and the report writer show each one; the presence and hard-pixel
    reliability tables go to ``engine.state.reliability_tables["presence"]`` / ``["hard_pixel"]``.

    Args:
        metric_fn: the fidelity metric (default: ``FidelityMetric()``).
        output_transform: ``engine.state.output -> (samples, labels, calibration_probs)``.
    """

    def __init__(self, metric_fn: FidelityMetric | None = None, output_transform: Any = None) -> None:
        metric_fn = FidelityMetric() if metric_fn is None else metric_fn
        if not isinstance(metric_fn, FidelityMetric):
            raise TypeError(f"metric_fn must be a monai_car.metrics.FidelityMetric, got {type(metric_fn).__name__}.")
        super().__init__(metric_fn, FidelityOutput() if output_transform is None else output_transform, False)

    def update(self, output: Sequence[Any]) -> None:
        if len(output) != 3:
            raise ValueError(f"output must be (samples, labels, calibration_probs), got {len(output)} items.")
        samples, labels, probs = output
        self.metric_fn(samples, labels, calibration_probs=probs)

    def compute(self) -> Any:
        values, reliability = self.metric_fn.report()
        self._is_reduced = True
        self._store_tables(reliability)
        return values

    def completed(self, engine: Engine, name: str) -> None:
        """Each figure under its own key in ``engine.state.metrics`` (not the whole dict under ``name``)."""
        for key, value in self.compute().items():
            engine.state.metrics[key] = value


def default_car_metrics(
    num_classes: int,
    ged_sample_counts: Sequence[int] = (),
    ece_bins: int = 10,
    fidelity_num_samples: int | None = None,
) -> tuple[dict[str, CARMetricHandler], dict[str, CARMetricHandler]]:
    """The evaluator's default metrics for binary segmentation (LIDC): key ``{"ged"}`` and the others.

    Args:
        num_classes: the network's classes (must be 2).
        ged_sample_counts: further GEDs from the first ``n`` samples.
        ece_bins: bins of the soft-target ECEs.
        fidelity_num_samples: samples the fidelity report uses (the first ``n``; None: all).

    Returns:
        ``(key_val_metric, additional_metrics)``: ``ged``; ``ged_<n>``, ``hm_iou``, ``ece``, ``ece_calibration`` and
        ``fidelity`` (whose figures land under their own keys, see :class:`FidelityMetricHandler`).

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
    extra["fidelity"] = FidelityMetricHandler(FidelityMetric(num_samples=fidelity_num_samples))
    return key, extra
