"""The evaluator's metrics where the label distribution is known (the modified Cityscapes, the synthetic scenes).

:func:`known_distribution_metrics` gives :class:`~monai_car.engines.CAREvaluator` (with ``label_classes`` set, so that
``label`` is one unflipped label map per case) its key metric and the rest of the report:

- ``mode_ged`` (key, lower is better): mode-weighted GED of G's first ``num_samples`` samples against the ``2^n``
  modes of the label, d averaged over the switchable classes and their copies, void dropped from every pair;
- ``control_ged``: the same for the control, ``num_samples`` label maps drawn from the TRUE distribution (each a mode,
  drawn by its weight, seeded per case): what an ideal G would score with this many samples (not 0: the V-statistic
  counts each sample with itself);
- ``f_offset_mean`` / ``_worst`` / per class and ``g_offset_*``: the per-class calibration offsets
  |true flip probability - predicted| of F (its mean probability of the copy, on the pixels where the ground truth and
  the black box agree on the class) and of G (the copy's frequency among the hard samples);
- ``ece_calibration`` (F), ``ece_samples`` (the hard samples' mean) against the exact soft targets, MoSE's convention,
  right-closed bins; ``sample_sharpness`` (nats) on the switchable-class pixels;
- ``control_offset_mean`` / ``_worst`` / per class and ``control_predicted_*``: G's offsets measured on the control's
  samples, the same draws as ``control_ged``: the sampling noise an ideal G shows with this many samples and cases
  (G's offsets are not expected below it).

The key metric (model selection) is ``mode_ged`` or, with ``key_metric="g_offset_mean"``, G's mean offset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_car.metrics import (
    CalibrationOffsetMetric,
    KnownDistributionCalibrationMetric,
    ModeWeightedGEDMetric,
    mode_label_maps,
    switchable_modes,
    unflip_label,
)
from monai_car.utils.cityscapes_classes import COPY_IDS, FLIP_PROBABILITIES, IGNORE_INDEX, SWITCHABLE_TRAIN_IDS
from monai_car.utils.enums import CarKeys
from monai_car.utils.rng import derive_seed
from monai_car.utils.validation import check_non_negative_int, check_positive_int

from .metric_handlers import CARMetricHandler

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = [
    "KEY_METRICS",
    "ControlOffsetHandler",
    "ControlSamplesOutput",
    "KnownDistributionHandler",
    "ModesOutput",
    "known_distribution_metrics",
]

KEY_METRICS = ("mode_ged", "g_offset_mean")
"""``key_metric`` options of :func:`known_distribution_metrics` (both lower is better)."""


class ModesOutput:
    """``(samples[:, :n], modes)``: G's ``(B, n, K, *spatial)`` probabilities and the ``(B, 2^k, *spatial)`` modes."""

    def __init__(self, switchable: Sequence[int], copies: Sequence[int], num_samples: int | None = None) -> None:
        self.switchable, self.copies, self.num_samples = list(switchable), list(copies), num_samples

    def modes(self, output: Mapping[str, Any]) -> torch.Tensor:
        label = unflip_label(output[CarKeys.LABEL], self.switchable, self.copies)
        return mode_label_maps(label, self.switchable, self.copies)

    def __call__(self, output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        samples = output[CarKeys.SAMPLES]
        if self.num_samples is not None:
            samples = samples[:, : self.num_samples]
        return samples, self.modes(output)


class ControlSamplesOutput(ModesOutput):
    """``(control samples, modes)``: ``num_samples`` modes per case drawn by their weights, seeded per case id.

    Args:
        switchable, copies: the flip layout.
        flip_probabilities: the true flip probabilities.
        num_samples: draws per case.
        seed: the run's seed (each case draws from ``derive_seed(seed, "control", case_id)``).
    """

    def __init__(
        self,
        switchable: Sequence[int],
        copies: Sequence[int],
        flip_probabilities: Sequence[float],
        num_samples: int,
        seed: int = 0,
    ) -> None:
        super().__init__(switchable, copies, check_positive_int(num_samples, "num_samples"))
        self.weights = switchable_modes(flip_probabilities)[1]
        self.seed = check_non_negative_int(seed, "seed")

    def __call__(self, output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        modes = self.modes(output)
        ids = output.get(CarKeys.CASE_ID)
        rows = []
        for i in range(modes.shape[0]):
            case = str(ids[i]) if isinstance(ids, (list, tuple)) and len(ids) == modes.shape[0] else f"item {i}"
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "control", case))
            drawn = torch.multinomial(self.weights, int(self.num_samples), replacement=True, generator=gen)
            rows.append(modes[i, drawn.to(modes.device)])
        return torch.stack(rows), modes


def _whole_output(output: Mapping[str, Any]) -> tuple[Mapping[str, Any]]:
    return (output,)


class KnownDistributionHandler(CARMetricHandler):
    """Ignite handler of a metric called with extra keyword tensors and returning a dict of figures.

    Each figure goes into ``engine.state.metrics`` under its own key; a metric with ``reliability_tables()`` also
    stores its tables in ``engine.state.reliability_tables``.

    Args:
        metric_fn: :class:`~monai_car.metrics.CalibrationOffsetMetric` or
            :class:`~monai_car.metrics.KnownDistributionCalibrationMetric`.
        kwargs_keys: ``{keyword: output key}`` passed along, e.g. ``{"calibration_probs": "calibration_probs"}``
            (a missing output key passes None).
    """

    def __init__(self, metric_fn: Any, kwargs_keys: Mapping[str, str]) -> None:
        # ignite refuses a Mapping from output_transform: hand the whole output over as a 1-tuple
        super().__init__(metric_fn, output_transform=_whole_output, save_details=False)
        self.kwargs_keys = dict(kwargs_keys)

    def update(self, output: Sequence[Mapping[str, Any]]) -> None:
        (output,) = output
        kwargs = {name: output.get(key) for name, key in self.kwargs_keys.items()}
        self.metric_fn(output[CarKeys.SAMPLES], output[CarKeys.LABEL], **kwargs)

    def compute(self) -> Any:
        values = self.metric_fn.aggregate()
        self._is_reduced = True
        tables_fn = getattr(self.metric_fn, "reliability_tables", None)
        if callable(tables_fn):
            self._store_tables(tables_fn())
        return values

    def completed(self, engine: Engine, name: str) -> None:
        """Each figure under its own key in ``engine.state.metrics``."""
        for key, value in self.compute().items():
            engine.state.metrics[key] = value


class ControlOffsetHandler(KnownDistributionHandler):
    """G's calibration offsets measured on the control's samples (``control_offset_*``, ``control_predicted_*``).

    The control draws ``num_samples`` modes per case from the true distribution (:class:`ControlSamplesOutput`, the
    same draws as ``control_ged``); their copy frequencies differ from the flip probabilities by sampling noise only,
    so these offsets are the floor an ideal G would show with as many samples and cases.

    Args:
        metric_fn: a :class:`~monai_car.metrics.CalibrationOffsetMetric` built with ``from_probabilities=False``.
        control: the control's draws.
    """

    def __init__(self, metric_fn: Any, control: ControlSamplesOutput) -> None:
        if getattr(metric_fn, "from_probabilities", True):
            raise ValueError("metric_fn must read label maps (CalibrationOffsetMetric(from_probabilities=False)).")
        super().__init__(metric_fn, {})
        self.control = control

    def update(self, output: Sequence[Mapping[str, Any]]) -> None:
        (output,) = output
        samples, _ = self.control(output)
        self.metric_fn(samples, output[CarKeys.LABEL])

    def compute(self) -> Any:
        """G's figures of the control under ``control_`` names (F's are not measured here)."""
        values = super().compute()
        return {"control_" + key[2:]: value for key, value in values.items() if key.startswith("g_")}


def known_distribution_metrics(
    switchable: Sequence[int] = SWITCHABLE_TRAIN_IDS,
    copies: Sequence[int] = COPY_IDS,
    flip_probabilities: Sequence[float] = FLIP_PROBABILITIES,
    ignore_index: int | None = IGNORE_INDEX,
    num_samples: int = 16,
    ece_bins: int = 10,
    seed: int = 0,
    black_box_key: str | None = "blackbox",
    key_metric: str = "mode_ged",
) -> tuple[dict[str, CARMetricHandler], dict[str, CARMetricHandler]]:
    """The key metric and the others of a known-distribution evaluation (see the module docstring).

    Args:
        switchable, copies, flip_probabilities: the flip layout (default: the modified Cityscapes').
        ignore_index: the void label.
        num_samples: G's samples per case the metrics use (the paper: 16).
        ece_bins: ECE bins.
        seed: seed of the control's draws.
        black_box_key: the evaluator output key of the black box's prediction (restricts F's offsets to the pixels
            where it agrees with the ground truth, as the paper); None: all pixels of the class.
        key_metric: the model-selection metric, one of :data:`KEY_METRICS`: ``"mode_ged"`` (how close the samples'
            distribution is, mode by mode) or ``"g_offset_mean"`` (how close G's frequency of each copy class is to
            its flip probability, the calibration the bundle is about).

    Returns:
        ``({key_metric: ...}, {...})``: the key metric and the others (``mode_ged`` or ``calibration_offsets``,
        ``control_ged``, ``control_offsets``, ``known_calibration``); pass them as ``key_val_metric`` and
        ``additional_metrics`` with ``passthrough_keys=[black_box_key]``.
    """
    check_positive_int(num_samples, "num_samples")
    if key_metric not in KEY_METRICS:
        raise ValueError(f"key_metric must be one of {list(KEY_METRICS)}, got {key_metric!r}.")
    switchable, copies = list(switchable), list(copies)
    _, weights = switchable_modes(flip_probabilities)
    classes = switchable + copies

    def mode_ged(from_probabilities: bool) -> ModeWeightedGEDMetric:
        return ModeWeightedGEDMetric(classes, weights, from_probabilities=from_probabilities, ignore_index=ignore_index)

    ged = CARMetricHandler(mode_ged(True), ModesOutput(switchable, copies, num_samples))
    control = ControlSamplesOutput(switchable, copies, flip_probabilities, num_samples, seed)
    offsets = CalibrationOffsetMetric(switchable, copies, flip_probabilities, num_samples=num_samples)
    control_offsets = CalibrationOffsetMetric(switchable, copies, flip_probabilities, from_probabilities=False)
    calibration = KnownDistributionCalibrationMetric(
        switchable, copies, flip_probabilities, ignore_index, ece_bins, num_samples=num_samples
    )
    f_keys = {"calibration_probs": CarKeys.CALIBRATION.value}
    offset_keys = {**f_keys, **({"black_box": black_box_key} if black_box_key else {})}
    offsets_handler = KnownDistributionHandler(offsets, offset_keys)
    extra = {
        "control_ged": CARMetricHandler(mode_ged(False), control),
        "control_offsets": ControlOffsetHandler(control_offsets, control),
        "known_calibration": KnownDistributionHandler(calibration, f_keys),
    }
    if key_metric == "mode_ged":
        return {"mode_ged": ged}, {"calibration_offsets": offsets_handler, **extra}
    # the handler writes each of its figures under its own name, g_offset_mean among them: the key metric's value
    return {"g_offset_mean": offsets_handler}, {"mode_ged": ged, **extra}
