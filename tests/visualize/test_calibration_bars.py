from __future__ import annotations

import os
import tempfile

os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from monai_car.utils.cityscapes_classes import COPY_NAMES, FLIP_PROBABILITIES  # noqa: E402
from monai_car.visualize import calibration_bars_figure, save_calibration_bars  # noqa: E402

TRUE = list(FLIP_PROBABILITIES)
F = [0.47, 0.40, 0.41, 0.30, 0.23]  # offsets 0.0006, 0.0118, 0.0571, 0.0059, 0.0053
G = torch.tensor([0.45, 0.42, float("nan"), 0.28, 0.25], dtype=torch.float64)  # car2 not measured


def test_bars_heights_order_and_legend():
    fig = calibration_bars_figure(TRUE, {"F": F, "G": G})
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx(TRUE + F + [0.45, 0.42, 0.28, 0.25])  # no bar for G's NaN class
    xs = [p.get_x() + p.get_width() / 2 for p in ax.patches]
    assert xs[0] < xs[5] < xs[10] < xs[1]  # per class: true, F, G side by side
    assert [t.get_text() for t in ax.get_xticklabels()] == list(COPY_NAMES)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    f_offset = np.abs(np.array(F) - np.array(TRUE))
    assert labels[0] == "true"
    assert labels[1] == f"F (offset mean {100 * f_offset.mean():.1f} %, worst {100 * f_offset.max():.1f} %)"
    assert labels[1].endswith("worst 5.7 %)")  # car2: |6/17 - 0.41|
    # G over the 4 measured classes: offsets 0.0206, 0.0082, 0.0141, 0.0147 -> mean 1.4 %, worst 2.1 % (sidewalk2)
    assert labels[2] == "G (offset mean 1.4 %, worst 2.1 %)"


def test_writes_a_readable_png(tmp_path):
    out = save_calibration_bars(tmp_path / "bars" / "calibration.png", TRUE, {"F": F}, dpi=60)
    assert out.exists() and [p.name for p in out.parent.iterdir()] == ["calibration.png"]  # no temp file left
    with Image.open(out) as im:
        im.load()
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
        colors = {tuple(c) for c in np.asarray(im.convert("RGB")).reshape(-1, 3).tolist()}
    assert (0x4C, 0x72, 0xB0) in colors and (0xDD, 0x84, 0x52) in colors  # the true and F bars were drawn


@pytest.mark.parametrize(
    "true, predicted, kwargs, match",
    [
        (TRUE[:4], {"F": F}, {}, "5 classes"),
        (TRUE, {"F": F[:3]}, {}, "5 classes"),
        (TRUE, {"F": [1.2] + F[1:]}, {}, r"in \[0, 1\]"),
        ([float("nan")] + TRUE[1:], {"F": F}, {}, "finite"),
        (TRUE, {"F": [float("nan")] * 5}, {}, "NaN for every class"),
        (TRUE, {}, {}, "1 to 6 models"),
        (TRUE, {"F": F}, {"class_names": "sidewalk2"}, "sequence of names"),
        (TRUE, {"F": "abc"}, {}, "sequence of probabilities"),
    ],
)
def test_invalid_inputs(true, predicted, kwargs, match):
    with pytest.raises(ValueError, match=match):
        calibration_bars_figure(true, predicted, **kwargs)


def test_bad_path_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="PNG"):
        save_calibration_bars(tmp_path / "bars.jpg", TRUE, {"F": F})
    assert list(tmp_path.iterdir()) == []
