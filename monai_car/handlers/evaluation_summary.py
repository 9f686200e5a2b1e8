"""A few lines that say how an evaluation went: GED / HM-IoU beside the fidelity report, with what to compare them to.

``monai-car-summary runs/lidc_car/eval/metrics.json`` (a console command of the package) prints them for a finished
evaluation (the quick start does); :class:`~monai_car.handlers.EvaluationReportWriter` logs them when it writes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["format_evaluation_summary", "main"]


def _value(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return None
    return float(value)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_evaluation_summary(metrics: Mapping[str, Any]) -> str:
    """Multi-line text: the sample-set metrics, then the fidelity report of the hard samples.

    Args:
        metrics: an evaluator's metrics (``engine.state.metrics`` or ``metrics.json``'s ``"metrics"``): ``ged``,
            ``ged_<n>``, ``hm_iou``, ``hm_iou_<n>``, ``ece``, ``ece_calibration`` and the fidelity keys; missing ones
            are shown as ``n/a``.

    Raises:
        TypeError: when ``metrics`` is not a mapping.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of names to numbers, got {type(metrics).__name__}.")
    if "mode_ged" in metrics:
        return _known_distribution_summary(metrics)
    geds = sorted((k for k in metrics if k.startswith("ged_") and k[4:].isdigit()), key=lambda k: int(k[4:]))
    hms = sorted((k for k in metrics if k.startswith("hm_iou_") and k[7:].isdigit()), key=lambda k: int(k[7:]))
    parts = [f"GED({k[4:]}) {_fmt(_value(metrics, k))}" for k in geds] or [f"GED {_fmt(_value(metrics, 'ged'))}"]
    parts += [f"HM-IoU({k[7:]}) {_fmt(_value(metrics, k))}" for k in hms] or [
        f"HM-IoU {_fmt(_value(metrics, 'hm_iou'))}"
    ]
    ece, ece_f = _value(metrics, "ece"), _value(metrics, "ece_calibration")
    parts.append(f"ECE G's mean {_fmt(None if ece is None else 100 * ece, 2)} %")
    parts.append(f"ECE F {_fmt(None if ece_f is None else 100 * ece_f, 2)} %")
    lines = ["sample sets:  " + ", ".join(parts)]
    if any(k in metrics for k in ("sample_sharpness", "presence_ece", "hard_pixel_ece", "f_fit")):
        lines += [
            "fidelity of the hard samples (argmax of G):",
            f"  sample sharpness      {_fmt(_value(metrics, 'sample_sharpness'))} nats "
            "(mean entropy in the lesion windows; 0 label-like, 0.693 a coin flip)",
            f"  lesion-presence ECE   {_fmt(_value(metrics, 'presence_ece'))} "
            f"(noise floor of a perfect model with these graders: {_fmt(_value(metrics, 'presence_ece_floor'))}, "
            f"95 % {_fmt(_value(metrics, 'presence_ece_floor_p95'))})",
            f"  hard-pixel ECE        {_fmt(_value(metrics, 'hard_pixel_ece'))} "
            "(fraction of samples vs of graders marking each lesion-window pixel)",
            f"  F's fit               {_fmt(_value(metrics, 'f_fit'))} "
            "(median of F's highest foreground probability where every grader marked the lesion)",
        ]
    return "\n".join(lines)


def _percent(metrics: Mapping[str, Any], key: str) -> str:
    value = _value(metrics, key)
    return _fmt(None if value is None else 100 * value, 1)


def _known_distribution_summary(metrics: Mapping[str, Any]) -> str:
    """The summary of a known-distribution evaluation (:func:`~monai_car.engines.known_distribution_metrics`)."""
    ged, control = _value(metrics, "mode_ged"), _value(metrics, "control_ged")
    gap = None if ged is None or control is None else ged - control
    lines = [
        f"sample sets:  mode-weighted GED {_fmt(ged)} (true-distribution control {_fmt(control)}, "
        f"difference {_fmt(gap)})",
        "calibration against the known flip probabilities (offset |true - predicted|, percent):",
        f"  F: mean {_percent(metrics, 'f_offset_mean')} %, worst {_percent(metrics, 'f_offset_worst')} %; "
        f"G (hard samples): mean {_percent(metrics, 'g_offset_mean')} %, worst {_percent(metrics, 'g_offset_worst')} %",
        f"  ECE (exact targets, MoSE's convention): F {_percent(metrics, 'ece_calibration')} %, "
        f"hard samples' mean {_percent(metrics, 'ece_samples')} %",
        f"  sample sharpness {_fmt(_value(metrics, 'sample_sharpness'))} nats "
        "(mean entropy of G's samples on the switchable classes; 0 label-like)",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the summary of a ``metrics.json`` written by the evaluation; 0 on success, 2 on a bad file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics_json", type=Path, help="metrics.json of an evaluation (eval/metrics.json)")
    args = parser.parse_args(argv)
    path: Path = args.metrics_json
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        print(f"error: {path} does not exist; run the evaluating entry point first.", file=sys.stderr)
        return 2
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: cannot read {path} as JSON ({e}); rerun the evaluation to rewrite it.", file=sys.stderr)
        return 2
    metrics = summary.get("metrics") if isinstance(summary, Mapping) else None
    if not isinstance(metrics, Mapping):
        print(f"error: {path} has no 'metrics' object; is it an evaluation's metrics.json?", file=sys.stderr)
        return 2
    print(format_evaluation_summary(metrics))
    return 0
