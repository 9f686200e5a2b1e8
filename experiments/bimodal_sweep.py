"""One run and the full sweep of the 1D bimodal regression experiment; the command line is in
:mod:`experiments.bimodal_regression`."""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .bimodal_plots import plot_offset_history, plot_samples, plot_sweep
from .bimodal_summary import (
    format_summary_markdown,
    iterations_to_settle,
    iterations_to_threshold,
    late_mean_offset,
    summarize_runs,
    write_json_atomic,
    write_text_atomic,
)
from .bimodal_train import BimodalConfig, train_bimodal

__all__ = ["PAPER_PIS", "PAPER_SIGMAS", "run_experiment", "run_sweep"]

logger = logging.getLogger(__name__)

PAPER_PIS: tuple[float, ...] = (0.5, 0.6, 0.9)
PAPER_SIGMAS: tuple[float, ...] = (0.01, 0.02, 0.03)


def run_experiment(config: BimodalConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train one run and write ``results.json``, ``samples.png`` and ``offset.png`` into ``out_dir``.

    Args:
        config: the run.
        out_dir: output folder (created if missing).
        progress: show a progress bar over iterations.

    Returns:
        The content of ``results.json``.
    """
    if not isinstance(config, BimodalConfig):
        raise ValueError("config must be a BimodalConfig.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=config.iterations, desc="iterations", disable=not progress, leave=False) as bar:
        run = train_bimodal(config, progress=bar.update)
    results = {
        "pi": config.pi,
        "sigma": config.sigma,
        "calibration_weight": config.calibration_weight,
        "seed": config.seed,
        "iterations": config.iterations,
        "mode_frequency": run.mode_frequency,
        "calibration_offset": run.calibration_offset,
        "off_branch_fraction": run.off_branch_fraction,
        "off_branch_tolerance": run.off_branch_tolerance,
        "discriminator_updates": run.discriminator_updates,
        "iterations_to_5pct": iterations_to_threshold(run.history),
        "iterations_to_settle_5pct": iterations_to_settle(run.history),
        "late_offset": late_mean_offset(run.history),
        "final_losses": run.losses,
        "seconds": run.seconds,
        "torch_threads": torch.get_num_threads(),
        "config": config.to_dict(),
        "history": run.history,
    }
    title = f"pi={config.pi:g}, sigma={config.sigma:g}, lambda={config.calibration_weight:g}, seed={config.seed}"
    plot_samples(run, out / "samples.png")
    plot_offset_history(run.history, config.pi, out / "offset.png", title=title)
    write_json_atomic(results, out / "results.json")  # last: its presence marks a complete run
    return results


def _load_complete(run_dir: Path, config: BimodalConfig) -> dict | None:
    """A finished run's results when ``run_dir`` holds one made with exactly ``config``."""
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return results if results.get("config") == config.to_dict() else None


def run_sweep(
    out_dir: str | Path,
    runs_dir: str | Path | None = None,
    repeats: int = 5,
    seed: int = 0,
    pis: Sequence[float] = PAPER_PIS,
    sigmas: Sequence[float] = PAPER_SIGMAS,
    weights: Sequence[float] = (1.0, 0.0),
    resume: bool = False,
    progress: bool = True,
    **config_kwargs,
) -> dict:
    """All ``pis x sigmas x weights`` runs with ``repeats`` seeds each, then the summary files.

    Args:
        out_dir: where ``summary.json``, ``summary.md`` and ``sweep_offsets.png`` go.
        runs_dir: parent of the per-run folders (default ``out_dir/runs``).
        repeats: seeds per configuration (``seed, seed + 1, ...``), shared by all lambdas.
        seed: first seed.
        pis: mode probabilities.
        sigmas: noise levels.
        weights: calibration weights (lambda).
        resume: reuse a run folder whose ``results.json`` was made with the same configuration.
        progress: progress bar over runs.
        config_kwargs: further :class:`BimodalConfig` fields (``iterations``, ``batch_size``, ...).

    Returns:
        The content of ``summary.json``.
    """
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}.")
    if not pis or not sigmas or not weights:
        raise ValueError("pis, sigmas and weights must be non-empty.")
    for key in ("pi", "sigma", "calibration_weight", "seed"):
        if key in config_kwargs:
            raise ValueError(f"{key} is set by the sweep itself.")
    configs = [
        BimodalConfig(pi=float(p), sigma=float(s), calibration_weight=float(w), seed=seed + r, **config_kwargs)
        for r in range(repeats)
        for p in pis
        for s in sigmas
        for w in weights
    ]  # repeat-major order: an interrupted sweep has covered every configuration evenly
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs_root = Path(runs_dir) if runs_dir is not None else out / "runs"
    start = time.perf_counter()
    results, reused = [], 0
    with tqdm(configs, desc="bimodal sweep runs", disable=not progress) as bar:
        for cfg in bar:
            run_dir = runs_root / f"pi{cfg.pi:g}_sigma{cfg.sigma:g}_lambda{cfg.calibration_weight:g}_seed{cfg.seed}"
            res = _load_complete(run_dir, cfg) if resume else None
            if res is None:
                res = run_experiment(cfg, run_dir, progress=False)
            else:
                reused += 1
            results.append(res)
            bar.set_postfix(offset=f"{res['calibration_offset']:.3f}", s=f"{res['seconds']:.1f}")
            logger.info("%s: final offset %.4f (%.1f s)", run_dir.name, res["calibration_offset"], res["seconds"])
    summary = summarize_runs(results)
    curves: dict[tuple[float, float, float], list] = {}
    for res in results:
        curves.setdefault((res["pi"], res["sigma"], res["calibration_weight"]), []).append(res["history"])
    plot_sweep(curves, out / "sweep_offsets.png")
    summary["settings"] = {
        "repeats": repeats,
        "seeds": [seed + r for r in range(repeats)],
        "pis": list(pis),
        "sigmas": list(sigmas),
        "weights": list(weights),
        "config": {k: v for k, v in configs[0].to_dict().items() if k not in ("pi", "sigma", "calibration_weight")},
        "runs_dir": str(runs_root),
    }
    summary["timing"] = {
        "sweep_wall_seconds": time.perf_counter() - start,
        "sum_of_run_seconds": sum(r["seconds"] for r in results),
        "runs": len(results),
        "runs_reused": reused,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "machine": platform.platform(),
    }
    write_text_atomic(format_summary_markdown(summary), out / "summary.md")
    write_json_atomic(summary, out / "summary.json")
    return summary
