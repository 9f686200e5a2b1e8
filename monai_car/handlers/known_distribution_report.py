"""KnownDistributionReportWriter: the evaluation report where the label distribution is known (Cityscapes bundle)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_car.utils.cityscapes_classes import COPY_NAMES, FLIP_PROBABILITIES

from .evaluation_report import EvaluationReportWriter

__all__ = ["KnownDistributionReportWriter"]

_PICTURES = (
    ("calibration", "ece_calibration", "reliability_calibration.png", "F (exact targets)",
     "predicted probability of the predicted class", "true probability of that class"),
    ("samples", "ece_samples", "reliability_samples.png", "the hard samples' mean (exact targets)",
     "fraction of samples predicting the class", "true probability of that class"),
)  # fmt: skip


def _show(metrics: Mapping[str, Any], key: str, percent: bool = False) -> str:
    value = metrics.get(key)
    if value is None or not isinstance(value, (int, float)) or value != value:
        return "n/a"
    return f"{100 * float(value):.1f} %" if percent else f"{float(value):.3f}"


class KnownDistributionReportWriter(EvaluationReportWriter):
    """:class:`EvaluationReportWriter` for :func:`~monai_car.engines.known_distribution_metrics`: the same files
    (``metrics.json``, ``report.md``), with reliability diagrams of F and of the hard samples against the exact
    targets, the per-class calibration bars (``calibration_bars.png``, like the paper's Figure 5: true flip probability,
    F, G and the control's draws), scene montages (:func:`~monai_car.visualize.save_scene_montage`) and a fidelity
    section with the offsets.

    Args:
        flip_probabilities: the true flip probabilities of the switchable classes, in layout order.
        class_names: the copies' names, in the same order (keys ``f_offset_<name>`` / ``g_offset_<name>``).
        kwargs: the arguments of :class:`EvaluationReportWriter`.
    """

    reliability_pictures = _PICTURES

    def __init__(
        self,
        *args: Any,
        flip_probabilities: Sequence[float] = FLIP_PROBABILITIES,
        class_names: Sequence[str] = COPY_NAMES,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if len(flip_probabilities) != len(class_names) or not class_names:
            raise ValueError(
                f"flip_probabilities ({len(flip_probabilities)}) and class_names ({len(class_names)}) must have one "
                "entry per switchable class."
            )
        self.flip_probabilities = [float(p) for p in flip_probabilities]
        self.class_names = [str(n) for n in class_names]

    def _predicted(self, metrics: Mapping[str, Any], net: str) -> list[float]:
        """Per class, the ``<net>_predicted_<name>`` figure (NaN when absent)."""
        return [float(metrics.get(f"{net}_predicted_{n}", float("nan"))) for n in self.class_names]

    def extra_pictures(
        self, out: Path, metrics: Mapping[str, Any], tables: Mapping[str, Any]
    ) -> list[tuple[Path, str]]:
        """The calibration bars of F, G and the control (those whose per-class predictions were measured)."""
        from monai_car.visualize import save_calibration_bars

        predicted = {
            "F (mean probability)": self._predicted(metrics, "f"),
            "G (hard samples)": self._predicted(metrics, "g"),
            "control (drawn from the true distribution)": self._predicted(metrics, "control"),
        }
        predicted = {k: v for k, v in predicted.items() if any(x == x for x in v)}
        if not predicted:
            return []
        path = save_calibration_bars(
            out / "calibration_bars.png", self.flip_probabilities, predicted, class_names=self.class_names
        )
        return [(path, "Calibration of the switchable classes (true flip probability, F, G, control)")]

    def save_case_montage(self, path: Path, case: Mapping[str, Any]) -> Path:
        """A scene montage: image, ground truth, F's argmax and entropy, the samples' entropy and samples."""
        from monai_car.visualize import save_scene_montage

        return save_scene_montage(
            path,
            case["image"],
            samples=case["samples"],
            calibration_probs=case["calibration_probs"],
            label=case["labels"],
            num_samples=min(self.num_montage_samples, case["samples"].shape[0]),
            title=case["case_id"],
        )

    def fidelity_section(self, metrics: Mapping[str, Any]) -> list[str]:
        """Mode-weighted GED and the per-class offsets of F and G, each against the control (samples drawn from the
        true distribution); exact-target ECE, sharpness."""
        if "mode_ged" not in metrics:
            return []
        lines = [
            "Are G's samples label-like, and are their frequencies the known flip probabilities? "
            "(hard samples: argmax of G)",
            "",
            "| figure | value | reference |",
            "|---|---|---|",
            f"| mode-weighted GED | {_show(metrics, 'mode_ged')} | control (samples drawn from the true "
            f"distribution): {_show(metrics, 'control_ged')} |",
            f"| sample sharpness (nats) | {_show(metrics, 'sample_sharpness')} | 0 label-like, 0.693 a coin flip |",
            f"| ECE of F (exact targets) | {_show(metrics, 'ece_calibration', True)} | 0 |",
            f"| ECE of the hard samples' mean | {_show(metrics, 'ece_samples', True)} | 0 |",
            f"| F's offset, mean / worst | {_show(metrics, 'f_offset_mean', True)} / "
            f"{_show(metrics, 'f_offset_worst', True)} | paper (real Cityscapes): 1.6 % / 6 % |",
            f"| G's offset, mean / worst | {_show(metrics, 'g_offset_mean', True)} / "
            f"{_show(metrics, 'g_offset_worst', True)} | control (sampling noise alone): "
            f"{_show(metrics, 'control_offset_mean', True)} / {_show(metrics, 'control_offset_worst', True)} |",
            "",
            "| class | true flip probability | F | G | control | F's offset | G's offset | control's offset |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, p in zip(self.class_names, self.flip_probabilities):
            predicted = " | ".join(_show(metrics, f"{net}_predicted_{name}") for net in ("f", "g", "control"))
            offsets = " | ".join(_show(metrics, f"{net}_offset_{name}", True) for net in ("f", "g", "control"))
            lines.append(f"| {name} | {p:.3f} | {predicted} | {offsets} |")
        return lines
