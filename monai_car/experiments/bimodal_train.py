"""Training of F, G and D on the 1D bimodal regression data (CAR paper section 5.1).

- F (calibration net): ``x -> y``, trained with the Gaussian form of ``L_ce``, ``0.5 * (y - F(x))^2``.
- G (refinement net): ``concat(x, F(x) detached, z) -> y`` with ``z ~ N(0, I)``; M samples per ``x``; loss
  ``L_adv + lambda * L_cal`` with ``L_cal = 0.5 * (mean_m G - F(x))^2``
  (:class:`~monai_car.losses.GaussianCalibrationLoss`).
- D (discriminator): ``concat(x, y) -> logit``, binary cross entropy real vs all M fake samples.

All three are 4-layer MLPs (MONAI ``FullyConnectedNet``, three hidden layers), trained jointly with Adam at lr 1e-4.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from monai.networks.nets import FullyConnectedNet
from torch import nn

from monai_car.losses import GaussianCalibrationLoss, discriminator_adversarial_loss, generator_adversarial_loss

from .bimodal_data import calibration_offset, evaluation_grid, mode_frequency, sample_bimodal

__all__ = ["BimodalConfig", "BimodalNets", "BimodalRun", "build_nets", "evaluate_calibration", "train_bimodal"]


@dataclass(frozen=True)
class BimodalConfig:
    """Everything that defines one run; with the same values a run is bit-for-bit reproducible on one machine.

    Attributes:
        pi: ``P(b = 1)`` of the data.
        sigma: noise standard deviation of the data.
        calibration_weight: lambda, the weight of ``L_cal`` in G's loss (the paper compares 1 and 0).
        iterations: training iterations (one F, one D and one G update each).
        seed: seeds network initialisation, data and noise.
        batch_size: ``(x, y)`` pairs per iteration.
        num_samples: M, G's samples per ``x`` in each iteration (all go to ``L_cal`` and to D).
        hidden: width of the three hidden layers of each MLP.
        noise_dim: dimension of G's noise ``z``.
        lr: Adam learning rate of F, G and D (the paper: 1e-4).
        betas: Adam betas (those of the CAR reference setup).
        eval_every: iterations between two entries of the offset history.
        eval_points: grid points of ``x`` per bimodal region for the mode frequencies.
        eval_samples: G samples per grid point for the history.
        final_eval_samples: G samples per grid point for the final mode frequencies.
    """

    pi: float = 0.5
    sigma: float = 0.02
    calibration_weight: float = 1.0
    iterations: int = 3000
    seed: int = 0
    batch_size: int = 64
    num_samples: int = 10
    hidden: int = 64
    noise_dim: int = 8
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.99)
    eval_every: int = 100
    eval_points: int = 50
    eval_samples: int = 100
    final_eval_samples: int = 1000

    def __post_init__(self) -> None:
        def _number(name: str, lo: float, hi: float = math.inf) -> None:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
                raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {value!r}.")

        _number("pi", 0.0, 1.0)
        _number("sigma", 0.0, 10.0)
        _number("calibration_weight", 0.0, 1e6)
        if not 0.0 < self.lr < 1.0:
            raise ValueError(f"lr must be in (0, 1), got {self.lr!r}.")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}.")
        for name in (
            "iterations",
            "batch_size",
            "num_samples",
            "hidden",
            "noise_dim",
            "eval_every",
            "eval_points",
            "eval_samples",
            "final_eval_samples",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}.")

    def to_dict(self) -> dict:
        """JSON-ready copy (``betas`` as a list)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out


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
    nets: BimodalNets, pi: float, points_per_region: int, samples_per_point: int, seed: int
) -> tuple[dict[str, float], float]:
    """Mode frequencies of G's samples over the fixed grid of each region, and the calibration offset.

    Args:
        nets: the trained networks.
        pi: the true ``P(b = 1)``.
        points_per_region: grid points of ``x`` per region.
        samples_per_point: G samples per grid point.
        seed: seed of the evaluation noise (fixed, so that histories compare like with like).

    Returns:
        ``({region key: frequency}, mean over regions of |frequency - pi|)``.
    """
    if not isinstance(samples_per_point, int) or samples_per_point < 1:
        raise ValueError(f"samples_per_point must be a positive integer, got {samples_per_point!r}.")
    noise = torch.Generator().manual_seed(seed)
    freqs = {}
    for key, x in evaluation_grid(points_per_region).items():
        _, samples = nets.sample(x[:, None], samples_per_point, noise)
        freqs[key] = mode_frequency(x, samples[..., 0])
    return freqs, calibration_offset(freqs, pi)


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
        losses: final-iteration losses ``{"F", "G_adv", "G_cal", "D"}``.
        seconds: wall time of training and evaluation.
    """

    config: BimodalConfig
    nets: BimodalNets
    history: list[dict] = field(default_factory=list)
    mode_frequency: dict[str, float] = field(default_factory=dict)
    calibration_offset: float = math.nan
    losses: dict[str, float] = field(default_factory=dict)
    seconds: float = math.nan


def train_bimodal(config: BimodalConfig, progress: Callable[[int], None] | None = None) -> BimodalRun:
    """Train F, G and D jointly on fresh draws of the data each iteration.

    Per iteration: F takes one Adam step on ``0.5 * mean((y - F(x))^2)``; G draws M samples per ``x`` from
    ``concat(x, F(x) detached, z)``; D takes one step on BCE (real pairs vs all M fake pairs); G takes one step on the
    non-saturating adversarial loss plus ``calibration_weight * 0.5 * mean((mean_m G - F(x))^2)``.

    Args:
        config: the run.
        progress: optional callback called with the number of iterations just completed (e.g. ``tqdm.update``).

    Returns:
        The trained networks, the offset history and the final mode frequencies.
    """
    if not isinstance(config, BimodalConfig):
        raise ValueError("config must be a BimodalConfig.")
    start = time.perf_counter()
    nets = build_nets(config)
    data_rng = torch.Generator().manual_seed(config.seed)
    noise_rng = torch.Generator().manual_seed(config.seed + 1_000_003)
    eval_seed = config.seed + 2_000_003
    adam = {"lr": config.lr, "betas": config.betas, "fused": True}
    opt_f = torch.optim.Adam(nets.calibration.parameters(), **adam)
    opt_g = torch.optim.Adam(nets.generator.parameters(), **adam)
    opt_d = torch.optim.Adam(nets.discriminator.parameters(), **adam)
    cal_loss = GaussianCalibrationLoss()
    m = config.num_samples
    run = BimodalRun(config=config, nets=nets)

    def _record(iteration: int) -> None:
        freqs, offset = evaluate_calibration(nets, config.pi, config.eval_points, config.eval_samples, eval_seed)
        run.history.append({"iteration": iteration, "calibration_offset": offset, "mode_frequency": freqs})

    _record(0)
    for it in range(1, config.iterations + 1):
        x, y, _ = sample_bimodal(config.batch_size, config.pi, config.sigma, data_rng)
        # F: Gaussian likelihood with unit variance -> 0.5 * squared error.
        loss_f = 0.5 * ((nets.calibration(x) - y) ** 2).mean()
        opt_f.zero_grad(set_to_none=True)
        loss_f.backward()
        opt_f.step()
        # G's M samples per x, conditioned on x and the (updated, detached) F(x).
        f, samples = nets.sample(x, m, noise_rng)
        x_rep = x[:, None, :].expand(-1, m, 1).reshape(-1, 1)
        # D: real pairs vs all M fake pairs.
        real_logits = nets.discriminator(torch.cat([x, y], dim=1))
        fake_logits = nets.discriminator(torch.cat([x_rep, samples.detach().reshape(-1, 1)], dim=1))
        loss_d = discriminator_adversarial_loss(real_logits, fake_logits)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # G: adversarial + lambda * calibration; D's parameters are frozen for this backward pass.
        nets.discriminator.requires_grad_(False)
        loss_adv = generator_adversarial_loss(nets.discriminator(torch.cat([x_rep, samples.reshape(-1, 1)], dim=1)))
        loss_cal = cal_loss(samples, f)
        loss_g = loss_adv + config.calibration_weight * loss_cal if config.calibration_weight else loss_adv
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        nets.discriminator.requires_grad_(True)
        if not all(math.isfinite(v.item()) for v in (loss_f, loss_d, loss_g)):
            raise FloatingPointError(f"non-finite loss at iteration {it} of {config}.")
        if it % config.eval_every == 0 or it == config.iterations:
            _record(it)
        if progress is not None:
            progress(1)
    run.losses = {"F": loss_f.item(), "G_adv": loss_adv.item(), "G_cal": loss_cal.item(), "D": loss_d.item()}
    run.mode_frequency, run.calibration_offset = evaluate_calibration(
        nets, config.pi, config.eval_points, config.final_eval_samples, eval_seed
    )
    run.seconds = time.perf_counter() - start
    return run
