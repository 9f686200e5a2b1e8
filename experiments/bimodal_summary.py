"""Per-run statistics and the sweep summary (JSON and Markdown table) of the 1D bimodal regression experiment."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from monai_car.utils import atomic

__all__ = [
    "OFFSET_THRESHOLD",
    "format_summary_markdown",
    "iterations_to_settle",
    "iterations_to_threshold",
    "late_mean_offset",
    "summarize_runs",
    "write_json_atomic",
    "write_text_atomic",
]

#: The "5 % offset" of the issue: a run has calibrated once its offset is at most this.
OFFSET_THRESHOLD = 0.05


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Note the argument order ``(text, path)``, unlike :func:`monai_car.utils.atomic.write_text_atomic` which this
    wraps (the file gets the permissions of one made by ``open()``); the folder must exist.
    """
    if not isinstance(text, str):
        raise ValueError("text must be a string.")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"folder {path.parent} does not exist.")
    return atomic.write_text_atomic(path, text)


def write_json_atomic(obj: object, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON (NaN not allowed) to ``path`` atomically."""
    return write_text_atomic(json.dumps(obj, indent=2, allow_nan=False) + "\n", path)


def _check_history(history: Sequence[Mapping]) -> None:
    if not isinstance(history, Sequence) or not history:
        raise ValueError("history must be a non-empty sequence of {'iteration', 'calibration_offset'} entries.")
    for h in history:
        if not isinstance(h, Mapping) or "iteration" not in h or "calibration_offset" not in h:
            raise ValueError("every history entry needs 'iteration' and 'calibration_offset'.")


def iterations_to_threshold(history: Sequence[Mapping], threshold: float = OFFSET_THRESHOLD) -> int | None:
    """First recorded iteration whose offset is at most ``threshold``; ``None`` if never."""
    _check_history(history)
    for h in history:
        if h["calibration_offset"] <= threshold:
            return int(h["iteration"])
    return None


def iterations_to_settle(history: Sequence[Mapping], threshold: float = OFFSET_THRESHOLD) -> int | None:
    """First recorded iteration from which every later offset is at most ``threshold``; ``None`` if the last is not."""
    _check_history(history)
    settled = None
    for h in reversed(history):
        if h["calibration_offset"] > threshold:
            break
        settled = int(h["iteration"])
    return settled


def late_mean_offset(history: Sequence[Mapping], fraction: float = 0.25) -> float:
    """Mean offset over the entries in the last ``fraction`` of the iterations (less sensitive to oscillation)."""
    _check_history(history)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    last = history[-1]["iteration"]
    start = last - fraction * last
    values = [h["calibration_offset"] for h in history if h["iteration"] >= start]
    return float(np.mean(values))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), std


def summarize_runs(results: Sequence[Mapping]) -> dict:
    """Group run results by ``(pi, sigma, lambda)`` and compare lambda = 1 with lambda = 0.

    Args:
        results: the ``results.json`` contents of the runs (keys ``pi``, ``sigma``, ``calibration_weight``,
            ``seed``, ``calibration_offset``, ``history``).

    Returns:
        ``{"rows": [...], "comparison": [...]}``. A row holds the final offset mean and sample standard deviation over
        repeats, the iterations to first reach / to stay within 5 % (mean over the repeats that did, and how many
        did) and the mean offset over the last quarter of training. A comparison entry per ``(pi, sigma)`` says
        whether lambda = 1's mean final offset is lower than lambda = 0's and in how many paired seeds it is.
    """
    if not results:
        raise ValueError("results is empty.")
    groups: dict[tuple[float, float, float], list[Mapping]] = {}
    for r in results:
        for key in ("pi", "sigma", "calibration_weight", "seed", "calibration_offset", "history"):
            if key not in r:
                raise ValueError(f"a run result lacks {key!r}.")
        groups.setdefault((float(r["pi"]), float(r["sigma"]), float(r["calibration_weight"])), []).append(r)
    rows = []
    for (pi, sigma, lam), runs in sorted(groups.items()):
        runs = sorted(runs, key=lambda r: r["seed"])
        finals = [float(r["calibration_offset"]) for r in runs]
        reach = [iterations_to_threshold(r["history"]) for r in runs]
        settle = [iterations_to_settle(r["history"]) for r in runs]
        late = [late_mean_offset(r["history"]) for r in runs]
        mean, std = _mean_std(finals)
        late_mean, late_std = _mean_std(late)
        reached = [v for v in reach if v is not None]
        settled = [v for v in settle if v is not None]
        regions = sorted({k for r in runs for k in r.get("mode_frequency", {})})
        freq_mean = {k: float(np.mean([r["mode_frequency"][k] for r in runs])) for k in regions}
        off = [r["off_branch_fraction"] for r in runs if r.get("off_branch_fraction")]
        off_mean = float(np.mean([np.mean(list(o.values())) for o in off])) if off else None
        rows.append(
            {
                "pi": pi,
                "sigma": sigma,
                "calibration_weight": lam,
                "repeats": len(runs),
                "seeds": [int(r["seed"]) for r in runs],
                "final_offsets": finals,
                "final_offset_mean": mean,
                "final_offset_std": std,
                "iterations_to_5pct": reach,
                "iterations_to_5pct_mean": float(np.mean(reached)) if reached else None,
                "runs_reaching_5pct": len(reached),
                "iterations_to_settle_5pct": settle,
                "iterations_to_settle_5pct_mean": float(np.mean(settled)) if settled else None,
                "runs_settled_5pct": len(settled),
                "late_offset_mean": late_mean,
                "late_offset_std": late_std,
                "mode_frequency_mean": freq_mean,
                "max_region_offset": max((abs(v - pi) for v in freq_mean.values()), default=None),
                "off_branch_fraction_mean": off_mean,
            }
        )
    comparison = []
    by_key = {(r["pi"], r["sigma"], r["calibration_weight"]): r for r in rows}
    for pi, sigma in sorted({(r["pi"], r["sigma"]) for r in rows}):
        with_cal, without = by_key.get((pi, sigma, 1.0)), by_key.get((pi, sigma, 0.0))
        if with_cal is None or without is None:
            continue
        paired = dict(zip(without["seeds"], without["final_offsets"]))
        wins = [f1 < paired[s] for s, f1 in zip(with_cal["seeds"], with_cal["final_offsets"]) if s in paired]
        comparison.append(
            {
                "pi": pi,
                "sigma": sigma,
                "final_offset_lambda1": with_cal["final_offset_mean"],
                "final_offset_lambda0": without["final_offset_mean"],
                "lambda1_lower": with_cal["final_offset_mean"] < without["final_offset_mean"],
                "paired_seeds": len(wins),
                "paired_seeds_lambda1_lower": int(sum(wins)),
                "late_offset_lambda1": with_cal["late_offset_mean"],
                "late_offset_lambda0": without["late_offset_mean"],
            }
        )
    return {"rows": rows, "comparison": comparison}


def _iters(mean: float | None, count: int, total: int) -> str:
    return f"{'-' if mean is None else f'{mean:.0f}'} ({count}/{total})"


def format_summary_markdown(summary: Mapping) -> str:
    """The sweep's tables as Markdown: one row per ``(pi, sigma, lambda)``, then lambda = 1 vs 0 per configuration."""
    if "rows" not in summary or "comparison" not in summary:
        raise ValueError("summary must come from summarize_runs (keys 'rows' and 'comparison').")
    lines = [
        "| pi | sigma | lambda | final offset (mean ± std) | mean frequency per region "
        "| iters to first reach 5 % (runs) | iters to stay within 5 % (runs) | offset over last quarter (mean ± std) "
        "| off-branch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        n = r["repeats"]
        freqs = " / ".join(f"{v:.3f}" for v in r.get("mode_frequency_mean", {}).values()) or "-"
        off = r.get("off_branch_fraction_mean")
        lines.append(
            f"| {r['pi']:g} | {r['sigma']:g} | {r['calibration_weight']:g} "
            f"| {r['final_offset_mean']:.3f} ± {r['final_offset_std']:.3f} | {freqs} "
            f"| {_iters(r['iterations_to_5pct_mean'], r['runs_reaching_5pct'], n)} "
            f"| {_iters(r['iterations_to_settle_5pct_mean'], r['runs_settled_5pct'], n)} "
            f"| {r['late_offset_mean']:.3f} ± {r['late_offset_std']:.3f} "
            f"| {'-' if off is None else f'{100 * off:.1f} %'} |"
        )
    lines += [
        "",
        "| pi | sigma | final offset lambda=1 | final offset lambda=0 | lambda=1 lower? | seeds where lambda=1 lower |",
        "|---|---|---|---|---|---|",
    ]
    for c in summary["comparison"]:
        lines.append(
            f"| {c['pi']:g} | {c['sigma']:g} | {c['final_offset_lambda1']:.3f} | {c['final_offset_lambda0']:.3f} "
            f"| {'yes' if c['lambda1_lower'] else 'no'} | {c['paired_seeds_lambda1_lower']}/{c['paired_seeds']} |"
        )
    return "\n".join(lines) + "\n"
