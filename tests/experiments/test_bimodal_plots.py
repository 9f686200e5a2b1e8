from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from experiments.bimodal_plots import plot_offset_history, plot_samples, plot_sweep, save_figure

PNG = b"\x89PNG\r\n\x1a\n"


def _hist(offsets):
    return [
        {"iteration": 10 * i, "calibration_offset": o, "mode_frequency": {"0.0-0.4": 0.5 + o, "0.4-0.8": 0.5 - o}}
        for i, o in enumerate(offsets)
    ]


def test_save_figure_atomic(tmp_path):
    fig = plt.figure()
    path = save_figure(fig, tmp_path / "f.png")
    assert path.read_bytes()[:8] == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]
    assert not plt.fignum_exists(fig.number)  # closed
    with pytest.raises(ValueError, match="png"):
        save_figure(plt.figure(), tmp_path / "f.jpg")
    with pytest.raises(ValueError, match="does not exist"):
        save_figure(plt.figure(), tmp_path / "no" / "f.png")
    plt.close("all")


def test_history_and_sweep_figures(tmp_path):
    assert plot_offset_history(_hist([0.3, 0.1, 0.02]), 0.5, tmp_path / "o.png", "t").read_bytes()[:8] == PNG
    curves = {
        (pi, 0.01, lam): [_hist([0.3, 0.1 * (1 + lam), 0.02]), _hist([0.2, 0.05])]
        for pi in (0.5, 0.9)
        for lam in (0.0, 1.0)
    }
    assert plot_sweep(curves, tmp_path / "s.png").read_bytes()[:8] == PNG
    with pytest.raises(ValueError):
        plot_offset_history([], 0.5, tmp_path / "x.png")
    with pytest.raises(ValueError):
        plot_sweep({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="BimodalRun"):
        plot_samples("not a run", tmp_path / "x.png")
