"""EvaluationReportWriter: an evaluator's metrics as JSON, a Markdown report, reliability diagrams and montages."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_car.utils.atomic import write_text_atomic  # re-exported: monai_car.handlers.write_text_atomic
from monai_car.utils.distributed import is_main_process
from monai_car.utils.enums import CarKeys
from monai_car.utils.validation import as_plain_tensor

from .evaluation_summary import format_evaluation_summary

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["EvaluationReportWriter", "write_text_atomic"]

_DESCRIPTIONS = {
    "ged": "squared generalized energy distance, all samples (lower is better)",
    "hm_iou": "Hungarian-matched IoU, all samples (higher is better)",
    "ece": "soft-target ECE of the sample mean, pooled pixels, percent (lower is better)",
    "ece_calibration": "soft-target ECE of F's probabilities, pooled pixels, percent (lower is better)",
    "sample_sharpness": "mean entropy (nats) of G's samples in the lesion windows: 0 label-like, 0.69 a coin flip",
    "presence_ece": "lesion-presence ECE over cases (fraction of samples vs of graders marking anything, 5 bins)",
    "presence_ece_floor": "presence ECE of a perfectly calibrated model with these graders (noise floor, mean)",
    "presence_ece_floor_p95": "95th percentile of that noise floor",
    "hard_pixel_ece": "hard-sample pixel ECE (fraction of samples vs of graders marking a pixel, lesion windows)",
    "f_fit": "median over cases every grader marked of F's highest foreground probability (near 1 is a fitted F)",
    "fidelity_cases": "cases in the fidelity report",
    "f_fit_cases": "cases every grader marked (F's fit)",
}

_RELIABILITY_PICTURES = (
    # table name, metric name, file, what, x label, y label
    ("ece", "ece", "reliability.png", "G's sample mean", "predicted foreground probability",
     "fraction of graders marking foreground"),
    ("ece_calibration", "ece_calibration", "reliability_calibration.png", "F", "predicted foreground probability",
     "fraction of graders marking foreground"),
    ("presence", "presence_ece", "reliability_presence.png", "lesion presence (per case)",
     "fraction of hard samples marking a lesion", "fraction of graders marking a lesion"),
    ("hard_pixel", "hard_pixel_ece", "reliability_hard_pixel.png", "hard samples (lesion-window pixels)",
     "fraction of hard samples marking the pixel", "fraction of graders marking the pixel"),
)  # fmt: skip


def _describe(name: str) -> str:
    if name in _DESCRIPTIONS:
        return _DESCRIPTIONS[name]
    for prefix, what in (("ged_", "squared GED from the first {} samples"), ("hm_iou_", "HM-IoU from {} samples")):
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            return what.format(name[len(prefix) :])
    return ""


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class EvaluationReportWriter:
    """Ignite handler: when a :class:`~monai_car.engines.CAREvaluator` completes, write its results (rank 0 only).

    Files, each written atomically, in ``output_dir``:

    - ``metrics.json``: every metric of ``engine.state.metrics`` (ECE as a fraction, as computed), the number of cases,
      samples and seed, skipped cases, the reliability tables and ``context`` (e.g. data set and checkpoint);
    - ``reliability.png`` (the sample mean) and ``reliability_calibration.png`` (F): reliability diagrams of the pooled
      soft-target calibration; ``reliability_presence.png`` and ``reliability_hard_pixel.png``: those of the fidelity
      report (lesion presence per case, hard-sample pixel frequencies);
    - ``montage_<case>.png`` for the first ``num_montage_cases`` cases: image, graders, F, sample mean, entropy and
      ``num_montage_samples`` samples;
    - ``report.md``: a short Markdown report with the metrics table and the pictures.

    Args:
        output_dir: the report folder (created).
        title: the report's heading.
        context: extra facts recorded in ``metrics.json`` and the report (JSON-serialisable values).
        num_montage_cases: montages to draw (0: none).
        num_montage_samples: samples per montage.
        view_size: show only the central ``view_size`` pixels of each montage panel (``None``: all).

    Subclasses (e.g. :class:`~monai_car.handlers.KnownDistributionReportWriter`) change the pictures through
    :attr:`reliability_pictures`, :meth:`save_case_montage`, :meth:`extra_pictures` and :meth:`fidelity_section`.
    """

    #: (table name, metric name, file, what, x label, y label) of each reliability diagram drawn when present
    reliability_pictures: tuple[tuple[str, str, str, str, str, str], ...] = _RELIABILITY_PICTURES

    def __init__(
        self,
        output_dir: str | Path,
        title: str = "CAR evaluation",
        context: Mapping[str, Any] | None = None,
        num_montage_cases: int = 2,
        num_montage_samples: int = 8,
        view_size: int | None = None,
    ) -> None:
        if num_montage_cases < 0 or num_montage_samples < 1:
            raise ValueError(
                f"num_montage_cases must be >= 0 and num_montage_samples >= 1, got {num_montage_cases}, "
                f"{num_montage_samples}."
            )
        context = dict(context or {})
        try:
            json.dumps(context)
        except TypeError as e:
            raise TypeError(f"context must be JSON-serialisable: {e}") from e
        self.output_dir = Path(output_dir)
        self.title = str(title)
        self.context = context
        self.num_montage_cases = int(num_montage_cases)
        self.num_montage_samples = int(num_montage_samples)
        self.view_size = view_size
        self._cases: list[dict] = []
        self._num_seen = 0
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        """Collect montage cases per iteration and write everything at ``COMPLETED``."""
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._cases = []
        self._num_seen = 0
        self.written = []

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        if isinstance(output, Mapping) and isinstance(output.get(CarKeys.IMAGE), torch.Tensor):
            self._num_seen += int(output[CarKeys.IMAGE].shape[0])  # this process's cases (the report's fallback count)
        if len(self._cases) >= self.num_montage_cases or not isinstance(output, Mapping):
            return
        if CarKeys.SAMPLES not in output or CarKeys.IMAGE not in output:
            return
        image = output[CarKeys.IMAGE]
        affines = getattr(image, "affine", None)
        labels = output.get(CarKeys.LABEL)
        ids = output.get(CarKeys.CASE_ID)
        has_probs = CarKeys.CALIBRATION in output
        for i in range(image.shape[0]):
            if len(self._cases) >= self.num_montage_cases:
                break
            affine = None
            if isinstance(affines, torch.Tensor):
                a = affines[i] if affines.ndim == 3 else affines
                affine = a.detach().cpu().double() if a.ndim == 2 else None
            self._cases.append(
                {
                    "image": _cpu(image[i]),
                    "samples": _cpu(output[CarKeys.SAMPLES][i]),
                    "calibration_probs": _cpu(output[CarKeys.CALIBRATION][i]) if has_probs else None,
                    "labels": _cpu(labels[i]) if isinstance(labels, torch.Tensor) else None,
                    "case_id": str(ids[i]) if isinstance(ids, (list, tuple)) else f"case_{len(self._cases)}",
                    "affine": affine,
                }
            )

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        from monai_car.visualize import save_reliability_diagram

        out = self.output_dir
        out.mkdir(parents=True, exist_ok=True)
        metrics = {str(k): _plain(v) for k, v in engine.state.metrics.items()}
        tables = dict(getattr(engine.state, "reliability_tables", {}) or {})
        skipped = dict(getattr(engine.state, "skipped_cases", {}) or {})
        written: list[Path] = []
        pictures: list[tuple[str, str]] = []
        for table, name, filename, what, xlabel, ylabel in self.reliability_pictures:
            if table in tables and metrics.get(name) is not None and sum(tables[table]["count"]) > 0:
                written.append(
                    save_reliability_diagram(
                        out / filename,
                        tables[table],
                        ece_percent=100.0 * float(metrics[name]),
                        title=f"Reliability of {what}",
                        xlabel=xlabel,
                        ylabel=ylabel,
                    )
                )
                pictures.append((f"Reliability diagram of {what}", filename))
        for path, caption in self.extra_pictures(out, metrics, tables):
            written.append(path)
            pictures.append((caption, path.name))
        for case in self._cases:
            filename = f"montage_{_safe(case['case_id'])}.png"
            written.append(self.save_case_montage(out / filename, case))
            pictures.append((f"Case {case['case_id']}", filename))
        num_cases = int(getattr(engine.state, "num_cases", 0) or 0) or _count_cases(engine) or self._num_seen
        summary = {
            "title": self.title,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "metrics": metrics,
            "num_samples": int(getattr(engine, "num_samples", 0) or 0),
            "seed": getattr(engine, "seed", None),
            "num_cases": num_cases,
            "skipped_cases": skipped,
            "context": self.context,
            "reliability_tables": tables,
            "pictures": [p for _, p in pictures],
        }
        written.append(write_text_atomic(out / "metrics.json", json.dumps(summary, indent=1) + "\n"))
        written.append(write_text_atomic(out / "report.md", self._markdown(summary, pictures)))
        self.written = written
        engine.logger.info("evaluation summary\n" + format_evaluation_summary(metrics))

    def save_case_montage(self, path: Path, case: Mapping[str, Any]) -> Path:
        """Draw one collected case (``image``, ``samples``, ``calibration_probs``, ``labels``, ``case_id``,
        ``affine``) to ``path``: :func:`~monai_car.visualize.save_montage` here."""
        from monai_car.visualize import save_montage

        return save_montage(
            path,
            case["image"],
            samples=case["samples"],
            calibration_probs=case["calibration_probs"],
            labels=case["labels"],
            num_samples=min(self.num_montage_samples, case["samples"].shape[0]),
            title=case["case_id"],
            view_size=self.view_size,
            affine=case["affine"],
        )

    def extra_pictures(
        self, out: Path, metrics: Mapping[str, Any], tables: Mapping[str, Any]
    ) -> list[tuple[Path, str]]:
        """More pictures to write into ``out`` and show in the report, as ``[(path written, caption)]``; none here."""
        return []

    def fidelity_section(self, metrics: Mapping[str, Any]) -> list[str]:
        """The report's fidelity section (Markdown lines; empty: no section)."""
        return _fidelity_lines(metrics)

    def _markdown(self, summary: Mapping[str, Any], pictures: Sequence[tuple[str, str]]) -> str:
        lines = [f"# {self.title}", "", f"Created {summary['created']}."]
        facts = [f"{summary['num_cases']} cases", f"{summary['num_samples']} samples per case"]
        if summary["seed"] is not None:
            facts.append(f"noise seed {summary['seed']}")
        lines += ["", ", ".join(facts) + "."]
        for key, value in self.context.items():
            lines.append(f"- {key}: {value}")
        fidelity = self.fidelity_section(summary["metrics"])
        if fidelity:
            lines += ["", "## Fidelity of the hard samples", ""] + fidelity
        lines += ["", "## All metrics", "", "| metric | value | meaning |", "|---|---|---|"]
        for name, value in summary["metrics"].items():
            shown = "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
            if name.startswith("ece") and isinstance(value, float):
                shown = f"{100 * value:.3f} %"
            lines.append(f"| {name} | {shown} | {_describe(name)} |")
        if summary["skipped_cases"]:
            lines += ["", f"Skipped cases ({len(summary['skipped_cases'])}):", ""]
            lines += [f"- {case}: {reason}" for case, reason in summary["skipped_cases"].items()]
        for caption, filename in pictures:
            lines += ["", f"## {caption}", "", f"![{caption}]({filename})"]
        return "\n".join(lines) + "\n"


def _fidelity_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The fidelity report as a short Markdown table (empty without it)."""
    if metrics.get("sample_sharpness", None) is None and metrics.get("presence_ece") is None:
        return []

    def show(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{float(value):.3f}"

    return [
        "Are G's samples label-like, and are their frequencies the graders'? (hard samples: argmax of G)",
        "",
        "| figure | value | reference |",
        "|---|---|---|",
        f"| sample sharpness (nats) | {show('sample_sharpness')} | 0 label-like, 0.693 a coin flip |",
        f"| lesion-presence ECE | {show('presence_ece')} | noise floor of a perfect model with these graders: "
        f"{show('presence_ece_floor')} (95 %: {show('presence_ece_floor_p95')}) |",
        f"| hard-sample pixel ECE | {show('hard_pixel_ece')} | 0: every pixel marked as often as by the graders |",
        f"| F's fit | {show('f_fit')} | F's highest foreground probability where every grader marked the lesion; "
        "near 1 is fitted |",
    ]


def _cpu(x: torch.Tensor) -> torch.Tensor:
    return as_plain_tensor(x, "x").detach().float().cpu()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "case"


def _count_cases(engine: Engine) -> int:
    details = getattr(engine.state, "metric_details", None) or {}
    for value in details.values():
        if isinstance(value, torch.Tensor) and value.ndim >= 1:
            return int(value.shape[0])
    return 0
