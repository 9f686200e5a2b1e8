"""Configuration of one run of the 1D bimodal regression experiment (CAR paper section 5.1)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["CALIBRATION_ESTIMATORS", "BimodalConfig"]

#: How ``L_cal`` is estimated from G's M samples (see :func:`unbiased_gaussian_calibration_loss`).
CALIBRATION_ESTIMATORS = ("unbiased", "biased")


@dataclass(frozen=True)
class BimodalConfig:
    """Everything that defines one run; with the same values a run is bit-for-bit reproducible on one machine.

    The defaults are the setting of ``docs/bimodal_regression``; the settings before its fix are reachable with
    ``noise_dim=8, discriminator_off=0, calibration_pretrain_iterations=0, calibration_estimator="biased",
    iterations=3000, eval_min_separation=0``.

    Attributes:
        pi: ``P(b = 1)`` of the data.
        sigma: noise standard deviation of the data.
        calibration_weight: lambda, the weight of ``L_cal`` in G's loss (the paper compares 1 and 0).
        iterations: stage-2 iterations (one G update each; one D update in D's active phase).
        seed: seeds network initialisation, data and noise.
        batch_size: ``(x, y)`` pairs per iteration.
        num_samples: M, G's samples per ``x`` in each iteration (all go to ``L_cal`` and to D).
        hidden: width of the three hidden layers of each MLP.
        noise_dim: dimension of G's noise ``z``. 1 as in the authors' 1D code: with 8 (the image models' size) and
            D updated every iteration G collapses onto the majority mode at ``pi = 0.9``, with or without ``L_cal``;
            with the D cycle 8 works too, but with more samples off the branches.
        lr: Adam learning rate of G and D in stage 2 (the paper: 1e-4), and of F when it is trained jointly.
        discriminator_lr: D's learning rate; ``None``: ``lr``.
        betas: Adam betas (those of the CAR reference setup).
        calibration_pretrain_iterations: stage 1, F alone on batches of ``calibration_batch_size`` with Adam at
            ``calibration_lr`` decayed linearly to 0; F is then frozen. 0: F is trained jointly instead, one step per
            stage-2 iteration at ``lr`` on the stage-2 batch (the setting before the fix).
        calibration_batch_size: stage-1 batch size.
        calibration_lr: stage-1 initial learning rate.
        calibration_estimator: ``"unbiased"`` or ``"biased"`` estimate of ``L_cal`` from the M samples.
        discriminator_on: D cycle: iterations in which D is updated ...
        discriminator_off: ... followed by this many in which it is frozen (0: D is updated every iteration). The
            method trains D in cycles (50 / 200); 5 / 10 here. Without a cycle D pins G's split and ``lambda = 0``
            calibrates as well as ``lambda = 1``; with it, G chases the frozen D and only ``L_cal`` holds its mean.
        r1_weight: weight of the R1 penalty on D's real inputs (the image method: 10; 0: none).
        eval_every: iterations between two entries of the offset history.
        eval_points: grid points of ``x`` per bimodal region for the mode frequencies.
        eval_samples: G samples per grid point for the history.
        final_eval_samples: G samples per grid point for the final mode frequencies.
        eval_min_separation: evaluate only where the two branches are at least this far apart
            (:func:`~experiments.bimodal_data.evaluation_grid`; 0.2: ``[0.4, 0.72)`` in the second region).
    """

    pi: float = 0.5
    sigma: float = 0.02
    calibration_weight: float = 1.0
    iterations: int = 5000
    seed: int = 0
    batch_size: int = 64
    num_samples: int = 10
    hidden: int = 64
    noise_dim: int = 1
    lr: float = 1e-4
    discriminator_lr: float | None = None
    betas: tuple[float, float] = (0.5, 0.99)
    calibration_pretrain_iterations: int = 1000
    calibration_batch_size: int = 1000
    calibration_lr: float = 1e-3
    calibration_estimator: str = "unbiased"
    discriminator_on: int = 5
    discriminator_off: int = 10
    r1_weight: float = 0.0
    eval_every: int = 100
    eval_points: int = 50
    eval_samples: int = 100
    final_eval_samples: int = 1000
    eval_min_separation: float = 0.2

    def __post_init__(self) -> None:
        def _number(name: str, lo: float, hi: float = math.inf) -> None:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
                raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {value!r}.")

        _number("pi", 0.0, 1.0)
        _number("sigma", 0.0, 10.0)
        _number("calibration_weight", 0.0, 1e6)
        _number("r1_weight", 0.0, 1e6)
        _number("eval_min_separation", 0.0, 0.99)
        for name in ("lr", "discriminator_lr", "calibration_lr"):
            value = getattr(self, name)
            if not (value is None and name == "discriminator_lr") and not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 < value < 1.0
            ):
                raise ValueError(f"{name} must be in (0, 1), got {value!r}.")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}.")
        for name in (
            "iterations",
            "batch_size",
            "num_samples",
            "hidden",
            "noise_dim",
            "calibration_batch_size",
            "discriminator_on",
            "eval_every",
            "eval_points",
            "eval_samples",
            "final_eval_samples",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("seed", "calibration_pretrain_iterations", "discriminator_off"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
        if self.calibration_estimator not in CALIBRATION_ESTIMATORS:
            raise ValueError(
                f"calibration_estimator must be one of {CALIBRATION_ESTIMATORS}, got {self.calibration_estimator!r}."
            )
        if self.calibration_estimator == "unbiased" and self.num_samples < 2:
            raise ValueError("the unbiased calibration estimator needs num_samples >= 2.")

    def to_dict(self) -> dict:
        """JSON-ready copy (``betas`` as a list)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out
