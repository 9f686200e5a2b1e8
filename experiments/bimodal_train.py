"""Training of F, G and D on the 1D bimodal regression data (CAR paper section 5.1).

- F (calibration net): ``x -> y``, trained with the Gaussian form of ``L_ce``, ``0.5 * (y - F(x))^2``; by default
  first on its own (stage 1) and then frozen, as in the method.
- G (refinement net): ``concat(x, F(x) detached, z) -> y`` with ``z ~ N(0, I)``; M samples per ``x``; loss
  ``L_adv + lambda * L_cal`` with ``L_cal = 0.5 * (E_z G - F(x))^2``, estimated from the M samples either without bias
  (default, :func:`unbiased_gaussian_calibration_loss`) or with the plain plug-in estimate
  (:class:`~monai_car.losses.GaussianCalibrationLoss`, which adds ``Var(G) / (2 M)``: a pull towards collapse).
- D (discriminator): ``concat(x, y) -> logit``, binary cross entropy real vs all M fake samples (optional R1 penalty),
  trained in cycles (``discriminator_on`` iterations updating, ``discriminator_off`` frozen), as in the method.

All three are 4-layer MLPs (MONAI ``FullyConnectedNet``, three hidden layers), trained with Adam at lr 1e-4.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from monai.networks.nets import FullyConnectedNet
from torch import nn

from monai_car.losses import (
    GaussianCalibrationLoss,
    discriminator_adversarial_loss,
    generator_adversarial_loss,
    r1_penalty,
)

from .bimodal_config import CALIBRATION_ESTIMATORS, BimodalConfig
from .bimodal_data import calibration_offset, evaluation_grid, mode_frequency, off_branch_fraction, sample_bimodal

__all__ = [
    "CALIBRATION_ESTIMATORS",
    "BimodalConfig",
    "BimodalNets",
    "BimodalRun",
    "build_nets",
    "discriminator_active",
    "evaluate_calibration",
    "train_bimodal",
    "unbiased_gaussian_calibration_loss",
]


_UNBIASED_CALIBRATION = GaussianCalibrationLoss(estimator="jackknife")


def unbiased_gaussian_calibration_loss(samples: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Unbiased estimate of ``0.5 * (E_z G - F)^2`` from M samples: ``0.5 * ((mean - F)^2 - var / M)``, averaged.

    The plug-in estimate ``0.5 * (mean_m G - F)^2`` has expectation ``0.5 * (E G - F)^2 + Var(G) / (2 M)``: its
    gradient also shrinks G's spread. For a 90 / 10 split of two modes a distance ``d`` apart (variance
    ``p (1 - p) d^2``) that term moves the minimum from ``p = pi`` to ``p = (pi - 1 / (2 M)) / (1 - 1 / M)``, 0.944 at
    ``pi = 0.9, M = 10``. Subtracting the unbiased sample variance over M removes it. The value can be negative.

    Args:
        samples: ``(B, M, 1)`` with ``M >= 2``.
        target: ``(B, 1)``, detached here.
    """
    if samples.ndim != 3 or samples.shape[1] < 2 or target.shape != (samples.shape[0], samples.shape[2]):
        raise ValueError(f"samples must be (B, M >= 2, C) and target (B, C), got {samples.shape} and {target.shape}.")
    return _UNBIASED_CALIBRATION(samples, target)


def discriminator_active(iteration: int, on: int, off: int) -> bool:
    """Whether D is updated at 1-based ``iteration`` of cycles of ``on`` updating and ``off`` frozen iterations."""
    if iteration < 1 or on < 1 or off < 0:
        raise ValueError(f"need iteration >= 1, on >= 1, off >= 0; got {iteration}, {on}, {off}.")
    return off == 0 or (iteration - 1) % (on + off) < on


class BimodalNets(nn.Module):
    """The three MLPs.

    Shapes:
        ``calibration``: ``(N, 1) -> (N, 1)``; ``generator``: ``(N, 2 + noise_dim) -> (N, 1)`` on
        ``concat(x, F(x), z)``; ``discriminator``: ``(N, 2) -> (N, 1)`` logits on ``concat(x, y)``.
    """

    def __init__(self, hidden: int, noise_dim: int) -> None:
        super().__init__()
        act = ("leakyrelu", {"negative_slope": 0.2})
        layers = [hidden] * 3
        self.noise_dim = noise_dim
        self.calibration = FullyConnectedNet(1, 1, layers, dropout=None, act=act)
        self.generator = FullyConnectedNet(2 + noise_dim, 1, layers, dropout=None, act=act)
        self.discriminator = FullyConnectedNet(2, 1, layers, dropout=None, act=act)

    def sample(
        self, x: torch.Tensor, num_samples: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """F's prediction and G's samples at ``x``.

        Args:
            x: ``(N, 1)`` inputs.
            num_samples: samples of G per input.
            generator: source of G's noise.

        Returns:
            ``(F(x) detached (N, 1), samples (N, num_samples, 1))``.
        """
        if x.ndim != 2 or x.shape[1] != 1:
            raise ValueError(f"x must be (N, 1), got {tuple(x.shape)}.")
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        f = self.calibration(x).detach()
        n = x.shape[0]
        z = torch.randn(n, num_samples, self.noise_dim, generator=generator)
        cond = torch.cat([x, f], dim=1)[:, None, :].expand(n, num_samples, 2)
        samples = self.generator(torch.cat([cond, z], dim=2).reshape(n * num_samples, -1))
        return f, samples.reshape(n, num_samples, 1)


def build_nets(config: BimodalConfig) -> BimodalNets:
    """The three MLPs, initialised from ``config.seed`` without touching the global random state."""
    if not isinstance(config, BimodalConfig):
        raise ValueError("config must be a BimodalConfig.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return BimodalNets(config.hidden, config.noise_dim)


@torch.no_grad()
def evaluate_calibration(
    nets: BimodalNets,
    pi: float,
    points_per_region: int,
    samples_per_point: int,
    seed: int,
    min_separation: float = 0.0,
    off_branch_tolerance: float | None = None,
) -> tuple[dict[str, float], float] | tuple[dict[str, float], float, dict[str, float]]:
    """Mode frequencies of G's samples over the fixed grid of each region, and the calibration offset.

    Args:
        nets: the trained networks.
        pi: the true ``P(b = 1)``.
        points_per_region: grid points of ``x`` per region.
        samples_per_point: G samples per grid point.
        seed: seed of the evaluation noise (fixed, so that histories compare like with like).
        min_separation: evaluate only where the branches are at least this far apart (see
            :func:`~experiments.bimodal_data.evaluation_grid`).
        off_branch_tolerance: if given, also return the fraction of samples farther than this from both branches.

    Returns:
        ``({region key: frequency}, mean over regions of |frequency - pi|)``, and ``{region key: off-branch
        fraction}`` as a third item when ``off_branch_tolerance`` is given.
    """
    if not isinstance(samples_per_point, int) or samples_per_point < 1:
        raise ValueError(f"samples_per_point must be a positive integer, got {samples_per_point!r}.")
    noise = torch.Generator().manual_seed(seed)
    freqs, off = {}, {}
    for key, x in evaluation_grid(points_per_region, min_separation).items():
        _, samples = nets.sample(x[:, None], samples_per_point, noise)
        freqs[key] = mode_frequency(x, samples[..., 0])
        if off_branch_tolerance is not None:
            off[key] = off_branch_fraction(x, samples[..., 0], off_branch_tolerance)
    if off_branch_tolerance is None:
        return freqs, calibration_offset(freqs, pi)
    return freqs, calibration_offset(freqs, pi), off


@dataclass
class BimodalRun:
    """Outcome of :func:`train_bimodal`.

    Attributes:
        config: the run's configuration.
        nets: the trained networks.
        history: ``[{"iteration", "calibration_offset", "mode_frequency"}, ...]`` every ``eval_every`` iterations,
            from iteration 0 to the last.
        mode_frequency: final frequencies of the ``b = 1`` branch per region (``final_eval_samples`` per point).
        calibration_offset: final mean over regions of ``|frequency - pi|``.
        off_branch_fraction: final fraction of samples per region farther than ``off_branch_tolerance`` from both
            branches.
        off_branch_tolerance: ``max(4 sigma, 0.01)``.
        losses: final-iteration losses ``{"F", "G_adv", "G_cal", "D"}`` (``D``: of D's last update).
        discriminator_updates: how many iterations updated D.
        seconds: wall time of both stages and the evaluation.
    """

    config: BimodalConfig
    nets: BimodalNets
    history: list[dict] = field(default_factory=list)
    mode_frequency: dict[str, float] = field(default_factory=dict)
    calibration_offset: float = math.nan
    off_branch_fraction: dict[str, float] = field(default_factory=dict)
    off_branch_tolerance: float = math.nan
    losses: dict[str, float] = field(default_factory=dict)
    discriminator_updates: int = 0
    seconds: float = math.nan


def _pretrain_calibration(nets: BimodalNets, config: BimodalConfig) -> None:
    """Stage 1: F alone, Adam at ``calibration_lr`` decayed linearly to 0, on its own data stream."""
    rng = torch.Generator().manual_seed(config.seed + 3_000_003)
    steps = config.calibration_pretrain_iterations
    opt = torch.optim.Adam(nets.calibration.parameters(), lr=config.calibration_lr, betas=config.betas)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = config.calibration_lr * (1.0 - step / steps)
        x, y, _ = sample_bimodal(config.calibration_batch_size, config.pi, config.sigma, rng)
        loss = 0.5 * ((nets.calibration(x) - y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"non-finite F loss at stage-1 step {step} of {config}.")
    nets.calibration.requires_grad_(False)


def train_bimodal(config: BimodalConfig, progress: Callable[[int], None] | None = None) -> BimodalRun:
    """Train F, then G and D (or all three jointly), on fresh draws of the data each iteration.

    Stage 1 (``calibration_pretrain_iterations > 0``): F alone on ``0.5 * mean((y - F(x))^2)``, then frozen. Stage 2,
    per iteration: (joint mode only: one F step); G draws M samples per ``x`` from ``concat(x, F(x) detached, z)``;
    in D's active phase D takes one step on BCE (real pairs vs all M fake pairs) plus ``r1_weight`` times R1 on the
    real pairs; G takes one step on the non-saturating adversarial loss plus ``calibration_weight * L_cal``.

    Args:
        config: the run.
        progress: optional callback called with the number of stage-2 iterations just completed.

    Returns:
        The trained networks, the offset history and the final mode frequencies.
    """
    if not isinstance(config, BimodalConfig):
        raise ValueError("config must be a BimodalConfig.")
    start = time.perf_counter()
    nets = build_nets(config)
    joint = config.calibration_pretrain_iterations == 0
    if not joint:
        _pretrain_calibration(nets, config)
    data_rng = torch.Generator().manual_seed(config.seed)
    noise_rng = torch.Generator().manual_seed(config.seed + 1_000_003)
    eval_seed = config.seed + 2_000_003
    adam = {"lr": config.lr, "betas": config.betas, "fused": True}
    opt_f = torch.optim.Adam(nets.calibration.parameters(), **adam) if joint else None
    opt_g = torch.optim.Adam(nets.generator.parameters(), **adam)
    opt_d = torch.optim.Adam(nets.discriminator.parameters(), **{**adam, "lr": config.discriminator_lr or config.lr})
    if config.calibration_estimator == "biased":
        cal_loss = GaussianCalibrationLoss()
    else:
        cal_loss = unbiased_gaussian_calibration_loss
    m = config.num_samples
    run = BimodalRun(config=config, nets=nets, off_branch_tolerance=max(4.0 * config.sigma, 0.01))
    loss_d = torch.tensor(math.nan)

    def _record(iteration: int) -> None:
        freqs, offset = evaluate_calibration(
            nets, config.pi, config.eval_points, config.eval_samples, eval_seed, config.eval_min_separation
        )
        run.history.append({"iteration": iteration, "calibration_offset": offset, "mode_frequency": freqs})

    _record(0)
    for it in range(1, config.iterations + 1):
        x, y, _ = sample_bimodal(config.batch_size, config.pi, config.sigma, data_rng)
        # F: Gaussian likelihood with unit variance -> 0.5 * squared error (trained here only in joint mode).
        if joint:
            loss_f = 0.5 * ((nets.calibration(x) - y) ** 2).mean()
            opt_f.zero_grad(set_to_none=True)
            loss_f.backward()
            opt_f.step()
        # G's M samples per x, conditioned on x and the (detached) F(x).
        f, samples = nets.sample(x, m, noise_rng)
        x_rep = x[:, None, :].expand(-1, m, 1).reshape(-1, 1)
        if discriminator_active(it, config.discriminator_on, config.discriminator_off):
            # D: real pairs vs all M fake pairs, plus R1 on the real pairs.
            real = torch.cat([x, y], dim=1).requires_grad_(config.r1_weight > 0)
            real_logits = nets.discriminator(real)
            fake_logits = nets.discriminator(torch.cat([x_rep, samples.detach().reshape(-1, 1)], dim=1))
            loss_d = discriminator_adversarial_loss(real_logits, fake_logits)
            if config.r1_weight > 0:
                loss_d = loss_d + config.r1_weight * r1_penalty(real_logits, real)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            run.discriminator_updates += 1
        # G: adversarial + lambda * calibration; D's parameters are frozen for this backward pass.
        nets.discriminator.requires_grad_(False)
        loss_adv = generator_adversarial_loss(nets.discriminator(torch.cat([x_rep, samples.reshape(-1, 1)], dim=1)))
        loss_cal = cal_loss(samples, f)
        loss_g = loss_adv + config.calibration_weight * loss_cal if config.calibration_weight else loss_adv
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        nets.discriminator.requires_grad_(True)
        checked = [loss_g, loss_d] + ([loss_f] if joint else [])  # loss_d: of D's last update (always at it 1)
        if not all(math.isfinite(v.item()) for v in checked):
            raise FloatingPointError(f"non-finite loss at iteration {it} of {config}.")
        if it % config.eval_every == 0 or it == config.iterations:
            _record(it)
        if progress is not None:
            progress(1)
    if not joint:
        with torch.no_grad():
            loss_f = 0.5 * ((nets.calibration(x) - y) ** 2).mean()
    run.losses = {"F": loss_f.item(), "G_adv": loss_adv.item(), "G_cal": loss_cal.item(), "D": loss_d.item()}
    run.mode_frequency, run.calibration_offset, run.off_branch_fraction = evaluate_calibration(
        nets,
        config.pi,
        config.eval_points,
        config.final_eval_samples,
        eval_seed,
        config.eval_min_separation,
        run.off_branch_tolerance,
    )
    run.seconds = time.perf_counter() - start
    return run
