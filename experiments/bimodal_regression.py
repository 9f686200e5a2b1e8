"""The paper's 1D bimodal regression experiment (CAR, section 5.1 / appendix A.2 / B.1), runnable as a module.

One run::

    python -m experiments.bimodal_regression --pi 0.9 --sigma 0.02 --calibration-weight 1 --out DIR

writes ``DIR/results.json``, ``DIR/samples.png`` and ``DIR/offset.png``. The sweep::

    python -m experiments.bimodal_regression --sweep --out DIR [--runs-dir RUNS] [--repeats 5]

trains every ``(pi, sigma)`` in ``{0.5, 0.6, 0.9} x {0.01, 0.02, 0.03}`` with lambda in ``{1, 0}``, seeds
``seed .. seed + repeats - 1`` (the same seeds for both lambdas: paired runs), keeps each run's folder under ``RUNS``
(default ``DIR/runs``) and writes ``DIR/summary.json``, ``DIR/summary.md`` and ``DIR/sweep_offsets.png``
(``--pis`` / ``--sigmas`` restrict the grid, e.g. for an ablation: ``--pis 0.9 --noise-dim 8``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

import torch

from .bimodal_config import CALIBRATION_ESTIMATORS, BimodalConfig
from .bimodal_summary import format_summary_markdown
from .bimodal_sweep import PAPER_PIS, PAPER_SIGMAS, run_experiment, run_sweep

__all__ = ["PAPER_PIS", "PAPER_SIGMAS", "main", "run_experiment", "run_sweep"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.bimodal_regression",
        description="CAR 1D bimodal regression (paper section 5.1): calibration of G's mode frequencies.",
    )
    p.add_argument("--pi", type=float, default=0.9, help="P(b = 1) of a single run (default 0.9)")
    p.add_argument("--sigma", type=float, default=0.02, help="noise std of a single run (default 0.02)")
    p.add_argument("--calibration-weight", type=float, default=1.0, help="lambda of a single run (default 1)")
    p.add_argument("--iterations", type=int, default=BimodalConfig.iterations)
    p.add_argument("--seed", type=int, default=0, help="seed of a single run, first seed of a sweep")
    p.add_argument("--batch-size", type=int, default=BimodalConfig.batch_size)
    p.add_argument("--num-samples", type=int, default=BimodalConfig.num_samples, help="M, G samples per x")
    p.add_argument("--eval-every", type=int, default=BimodalConfig.eval_every)
    p.add_argument("--noise-dim", type=int, default=BimodalConfig.noise_dim, help="G's noise size (default 1)")
    p.add_argument("--discriminator-on", type=int, default=BimodalConfig.discriminator_on, help="D cycle: updating")
    p.add_argument(
        "--discriminator-off", type=int, default=BimodalConfig.discriminator_off, help="D cycle: frozen (0: never)"
    )
    p.add_argument("--discriminator-lr", type=float, default=None, help="D's learning rate (default: that of G)")
    p.add_argument("--r1-weight", type=float, default=BimodalConfig.r1_weight, help="R1 on D's real inputs")
    p.add_argument(
        "--calibration-pretrain-iterations",
        type=int,
        default=BimodalConfig.calibration_pretrain_iterations,
        help="stage 1 (F alone, then frozen); 0: F trained jointly",
    )
    p.add_argument(
        "--calibration-estimator", choices=CALIBRATION_ESTIMATORS, default=BimodalConfig.calibration_estimator
    )
    p.add_argument(
        "--eval-min-separation",
        type=float,
        default=BimodalConfig.eval_min_separation,
        help="evaluate where the branches are at least this far apart (0: whole regions)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--sweep", action="store_true", help="all 9 (pi, sigma) x lambda in {1, 0} x --repeats")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--pis", type=float, nargs="+", default=list(PAPER_PIS), help="sweep: values of pi")
    p.add_argument("--sigmas", type=float, nargs="+", default=list(PAPER_SIGMAS), help="sweep: values of sigma")
    p.add_argument("--runs-dir", default=None, help="sweep: parent of the per-run folders (default OUT/runs)")
    p.add_argument("--resume", action="store_true", help="sweep: reuse finished runs with identical settings")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    common = {
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "num_samples": args.num_samples,
        "eval_every": args.eval_every,
        "noise_dim": args.noise_dim,
        "discriminator_on": args.discriminator_on,
        "discriminator_off": args.discriminator_off,
        "discriminator_lr": args.discriminator_lr,
        "r1_weight": args.r1_weight,
        "calibration_pretrain_iterations": args.calibration_pretrain_iterations,
        "calibration_estimator": args.calibration_estimator,
        "eval_min_separation": args.eval_min_separation,
    }
    try:
        if args.sweep:
            summary = run_sweep(
                args.out,
                runs_dir=args.runs_dir,
                repeats=args.repeats,
                pis=tuple(args.pis),
                sigmas=tuple(args.sigmas),
                seed=args.seed,
                resume=args.resume,
                progress=not args.no_progress,
                **common,
            )
            print(format_summary_markdown(summary))
            t = summary["timing"]
            print(f"{t['runs']} runs in {t['sweep_wall_seconds']:.0f} s wall ({t['torch_threads']} torch thread(s)).")
        else:
            cfg = BimodalConfig(
                pi=args.pi, sigma=args.sigma, calibration_weight=args.calibration_weight, seed=args.seed, **common
            )
            res = run_experiment(cfg, args.out, progress=not args.no_progress)
            print(json.dumps({k: res[k] for k in ("mode_frequency", "calibration_offset", "seconds")}, indent=2))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
