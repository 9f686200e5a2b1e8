"""Figures of the 1D bimodal regression experiment, written atomically (temp file + ``os.replace``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from monai_car.utils.atomic import atomic_file  # noqa: E402

from .bimodal_data import bimodal_branches, sample_bimodal  # noqa: E402
from .bimodal_summary import OFFSET_THRESHOLD  # noqa: E402
from .bimodal_train import BimodalRun  # noqa: E402

__all__ = ["plot_offset_history", "plot_samples", "plot_sweep", "save_figure"]

_LAMBDA_COLOURS = {0.0: "tab:red", 1.0: "tab:blue"}


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` as PNG to ``path`` atomically and close it.

    Args:
        fig: the figure.
        path: destination ``.png``; its folder must exist.
        dpi: resolution.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"figures are written as .png, got {path}.")
    if not path.parent.is_dir():
        raise ValueError(f"folder {path.parent} does not exist.")
    try:
        with atomic_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path


@torch.no_grad()
def plot_samples(run: BimodalRun, path: str | Path, num_x: int = 200, samples_per_x: int = 10) -> Path:
    """Data points and G's samples over ``x`` (like the paper's Figure 2), with F's prediction and the true branches.

    Args:
        run: a finished run.
        path: destination PNG.
        num_x: evenly spaced ``x`` in ``[0, 1]`` at which G is sampled.
        samples_per_x: G samples at each of them.
    """
    if not isinstance(run, BimodalRun):
        raise ValueError("run must be a BimodalRun.")
    if num_x < 2 or samples_per_x < 1:
        raise ValueError("num_x must be >= 2 and samples_per_x >= 1.")
    cfg = run.config
    data_x, data_y, _ = sample_bimodal(1000, cfg.pi, cfg.sigma, torch.Generator().manual_seed(cfg.seed + 7))
    x = torch.linspace(0.0, 1.0, num_x)[:, None]
    f, samples = run.nets.sample(x, samples_per_x, torch.Generator().manual_seed(cfg.seed + 11))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter(data_x[:, 0], data_y[:, 0], s=4, c="0.6", alpha=0.6, label="data")
    xs = x.expand(-1, samples_per_x)
    ax.scatter(xs.flatten(), samples[..., 0].flatten(), s=3, c="tab:blue", alpha=0.5, label="G samples")
    ax.plot(x[:, 0], f[:, 0], c="tab:orange", lw=2, label="F(x)")
    y0, y1 = bimodal_branches(x[:, 0])
    for y in (y0, y1):
        ax.plot(x[:, 0], y, "k--", lw=0.8)
    ax.set(xlabel="x", ylabel="y", ylim=(-1.1, 1.1))
    ax.set_title(
        f"pi={cfg.pi:g}, sigma={cfg.sigma:g}, lambda={cfg.calibration_weight:g}, seed={cfg.seed}: "
        f"offset {run.calibration_offset:.3f}",
        fontsize=9,
    )
    ax.legend(loc="upper right", fontsize=8, markerscale=3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_offset_history(history: Sequence[Mapping], pi: float, path: str | Path, title: str = "") -> Path:
    """Calibration offset and per-region mode frequencies over training iterations.

    Args:
        history: entries ``{"iteration", "calibration_offset", "mode_frequency"}`` as in ``results.json``.
        pi: the target frequency.
        path: destination PNG.
        title: figure title.
    """
    if not history:
        raise ValueError("history is empty.")
    its = [h["iteration"] for h in history]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax0.plot(its, [h["calibration_offset"] for h in history], c="k")
    ax0.axhline(OFFSET_THRESHOLD, ls=":", c="0.5", label="5 %")
    ax0.set(xlabel="iteration", ylabel="calibration offset", ylim=(0, None))
    ax0.legend(fontsize=8)
    for key in history[0]["mode_frequency"]:
        ax1.plot(its, [h["mode_frequency"][key] for h in history], label=f"x in {key}")
    ax1.axhline(pi, ls="--", c="k", lw=0.8, label="pi")
    ax1.set(xlabel="iteration", ylabel="frequency of b = 1 branch", ylim=(0, 1))
    ax1.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_sweep(curves: Mapping[tuple[float, float, float], Sequence[Sequence[Mapping]]], path: str | Path) -> Path:
    """Offset over iterations for every ``(pi, sigma)`` panel, lambda = 1 vs 0: thin lines per repeat, thick mean.

    Args:
        curves: ``{(pi, sigma, lambda): [history of repeat 0, history of repeat 1, ...]}``.
        path: destination PNG.
    """
    if not curves:
        raise ValueError("curves is empty.")
    pis = sorted({k[0] for k in curves})
    sigmas = sorted({k[1] for k in curves})
    weights = sorted({k[2] for k in curves})
    fig, axes = plt.subplots(
        len(pis), len(sigmas), figsize=(3.3 * len(sigmas), 2.6 * len(pis)), sharex=True, sharey=True, squeeze=False
    )
    for i, pi in enumerate(pis):
        for j, sigma in enumerate(sigmas):
            ax = axes[i, j]
            for k, lam in enumerate(weights):
                runs = curves.get((pi, sigma, lam), [])
                if not runs:
                    continue
                colour = _LAMBDA_COLOURS.get(lam, f"C{k + 2}")
                for hist in runs:
                    ax.plot([h["iteration"] for h in hist], [h["calibration_offset"] for h in hist], c=colour, lw=0.5)
                length = min(len(h) for h in runs)
                its = [h["iteration"] for h in runs[0][:length]]
                mean = np.mean([[h["calibration_offset"] for h in hist[:length]] for hist in runs], axis=0)
                ax.plot(its, mean, c=colour, lw=2, label=f"lambda={lam:g}")
            ax.axhline(OFFSET_THRESHOLD, ls=":", c="0.5")
            ax.set_title(f"pi={pi:g}, sigma={sigma:g}", fontsize=9)
            if i == len(pis) - 1:
                ax.set_xlabel("iteration")
            if j == 0:
                ax.set_ylabel("calibration offset")
    axes[0, 0].legend(fontsize=8)
    axes[0, 0].set_ylim(bottom=0.0)
    fig.suptitle("Calibration offset |freq(b=1) - pi| over training, thin: repeats, thick: mean", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
