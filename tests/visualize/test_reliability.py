from __future__ import annotations

import os
import tempfile

os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from monai_car.visualize import (  # noqa: E402
    expected_calibration_error,
    reliability_diagram_figure,
    reliability_table,
    save_reliability_diagram,
)

TABLE = {"count": [10, 0, 30], "mean_confidence": [0.1, float("nan"), 0.8], "accuracy": [0.3, float("nan"), 0.7]}


def test_ece_hand_value():
    # 100 * (10/40 * 0.2 + 30/40 * 0.1) = 12.5 %
    assert expected_calibration_error(TABLE) == pytest.approx(12.5)
    rows = [{"count": c, "mean_confidence": m, "accuracy": a} for c, m, a in zip(*TABLE.values())]
    assert expected_calibration_error(rows) == pytest.approx(12.5)
    tensors = {k: torch.tensor(v) for k, v in TABLE.items()}
    assert expected_calibration_error(tensors) == pytest.approx(12.5)


def test_table_gets_default_edges():
    t = reliability_table(TABLE)
    np.testing.assert_allclose(t["bin_edges"], [0.0, 1 / 3, 2 / 3, 1.0])
    t = reliability_table({**TABLE, "bin_edges": [0.5, 0.6, 0.8, 1.0]})
    np.testing.assert_allclose(t["bin_edges"], [0.5, 0.6, 0.8, 1.0])


def test_figure_title_bars_and_png(tmp_path):
    fig = reliability_diagram_figure(TABLE, title="F on LIDC")
    ax = fig.axes[0]
    assert "ECE = 12.500 %" in ax.get_title() and "N = 40" in ax.get_title() and "F on LIDC" in ax.get_title()
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.3, 0.7, -0.2, 0.1])  # accuracy bars of non-empty bins, then the gaps
    assert reliability_diagram_figure(TABLE, ece_percent=1.0).axes[0].get_title().endswith("(ECE = 1.000 %, N = 40)")
    out = save_reliability_diagram(tmp_path / "r.png", TABLE)
    assert out.read_bytes()[:4] == b"\x89PNG" and [p.name for p in tmp_path.iterdir()] == ["r.png"]


@pytest.mark.parametrize(
    "table, error, message",
    [
        ({"count": [1], "accuracy": [0.5]}, KeyError, "mean_confidence"),
        ({"count": [1, 2], "mean_confidence": [0.5], "accuracy": [0.5]}, ValueError, "equal length"),
        ({"count": [-1], "mean_confidence": [0.5], "accuracy": [0.5]}, ValueError, "non-negative"),
        ({"count": [0], "mean_confidence": [0.5], "accuracy": [0.5]}, ValueError, "no sample"),
        ({"count": [1], "mean_confidence": [1.5], "accuracy": [0.5]}, ValueError, r"in \[0, 1\]"),
        ({"count": [1], "mean_confidence": [float("nan")], "accuracy": [0.5]}, ValueError, r"in \[0, 1\]"),
        ({**TABLE, "bin_edges": [0, 0.5, 0.4, 1]}, ValueError, "increasing"),
        ([], ValueError, "non-empty list"),
        (3, TypeError, "dict of columns"),
    ],
)
def test_bad_tables(table, error, message):
    with pytest.raises(error, match=message):
        reliability_table(table)


def test_bad_ece_argument():
    with pytest.raises(ValueError, match="ece_percent"):
        reliability_diagram_figure(TABLE, ece_percent=float("nan"))


def test_plots_the_table_of_the_calibration_metric(tmp_path):
    calibration = pytest.importorskip("monai_car.metrics.calibration", reason="the calibration metric module")
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 1, 16, 16, generator=g)
    graders = (torch.rand(2, 4, 16, 16, generator=g) < probs).float()
    bins = calibration.compute_soft_target_calibration_bins(probs, graders, num_bins=10).sum(0)
    table = calibration.reliability_table_from_bins(bins)
    expected = 100 * float(calibration.calibration_error_from_bins(bins))
    assert expected_calibration_error(table) == pytest.approx(expected, rel=1e-9)
    assert save_reliability_diagram(tmp_path / "r.png", table).is_file()
