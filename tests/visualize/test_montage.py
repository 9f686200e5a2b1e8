from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from monai_car.visualize import montage_figure, render_montage, save_montage  # noqa: E402

SAMPLE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lidc_crops_sample"


def _case(shape=(24, 20), s=10, k=2, r=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, *shape, generator=g)
    samples = torch.softmax(3 * torch.randn(s, k, *shape, generator=g), dim=1)
    labels = (torch.rand(r, *shape, generator=g) > 0.6).to(torch.uint8)
    return image, samples, samples.mean(0), labels


def test_render_montage_is_an_rgb_array():
    image, samples, cal, labels = _case()
    arr = render_montage(image, samples=samples, calibration_probs=cal, labels=labels, title="c", dpi=50)
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    # 8 sample panels at 1.7 in x 50 dpi wide, 2 rows high (+ title)
    assert arr.shape[1] == pytest.approx(8 * 1.7 * 50, abs=2) and arr.shape[0] > 2 * 1.7 * 50
    assert arr.std() > 10  # not a blank canvas


def test_panels_follow_the_inputs():
    image, samples, cal, labels = _case(s=3, r=2)
    fig = montage_figure(image, samples=samples, calibration_probs=cal, labels=labels, num_samples=8)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [
        "image",
        "grader 0",
        "grader 1",
        "F foreground",
        "sample mean",
        "entropy of F",
        "sample 0",
        "sample 1",
        "sample 2",
    ]
    only_labels = montage_figure(image[0], labels=labels)
    assert [ax.get_title() for ax in only_labels.axes if ax.get_title()] == ["image", "grader 0", "grader 1"]


def test_3d_picks_the_slice_with_most_foreground():
    image, samples, cal, _ = _case(shape=(12, 10, 7))
    labels = torch.zeros(2, 12, 10, 7, dtype=torch.uint8)
    labels[:, 3:6, 3:6, 5] = 1
    fig = montage_figure(image, samples=samples, calibration_probs=cal, labels=labels, title="vol")
    assert fig._suptitle.get_text() == "vol (slice 5)"
    fig = montage_figure(image, samples=samples, calibration_probs=cal, slice_index=-1, title="vol")
    assert fig._suptitle.get_text() == "vol (slice 6)"


def test_view_size_zooms_on_the_centre():
    image, samples, cal, labels = _case(shape=(24, 20))
    fig = montage_figure(image, samples=samples, calibration_probs=cal, labels=labels, view_size=8)
    shown = fig.axes[0].get_images()[0].get_array()
    assert shown.shape == (8, 8)
    np.testing.assert_allclose(shown, _normalised(image[0].numpy()[8:16, 6:14]), atol=1e-6)
    with pytest.raises(ValueError, match="view_size"):
        montage_figure(image, labels=labels, view_size=0)


def _normalised(x: np.ndarray) -> np.ndarray:
    """The panel's min-max scaling (over the shown window)."""
    lo = x.min()
    return (x - lo) / (x.max() - lo)


@pytest.mark.parametrize("lps", [False, True])
def test_affine_gives_the_radiological_view(lps):
    """Anterior up, the patient's right on the left, whatever the array's storage orientation."""
    image = np.zeros((6, 5), np.float32)  # RAS array: axis 0 = x (to the right), axis 1 = y (to anterior)
    image[5, 4] = 1.0  # the most right and most anterior pixel
    affine = np.eye(4)
    if lps:  # the same picture stored L->R flipped and P->A flipped
        image, affine = image[::-1, ::-1].copy(), np.diag([-1.0, -1.0, 1.0, 1.0])
    fig = montage_figure(image, labels=image[None], affine=affine)
    shown = np.asarray(fig.axes[0].get_images()[0].get_array())
    assert shown.shape == (5, 6) and shown[0, 0] == 1.0 and shown.sum() == 1.0
    stored = np.asarray(montage_figure(image, labels=image[None]).axes[0].get_images()[0].get_array())
    assert stored.shape == (6, 5)
    vol = np.zeros((4, 3, 5), np.float32)
    vol[3, 2, 1] = 1.0
    fig = montage_figure(vol, labels=vol[None], affine=np.eye(4), title="v")
    assert fig._suptitle.get_text() == "v (slice 1)" and np.asarray(fig.axes[0].get_images()[0].get_array())[0, 0] == 1
    with pytest.raises(ValueError, match="4x4"):
        montage_figure(vol, labels=vol[None], affine=np.eye(2))


def test_save_montage_writes_png_atomically(tmp_path):
    image, samples, cal, labels = _case()
    out = save_montage(tmp_path / "sub" / "m.png", image, samples=samples, calibration_probs=cal, labels=labels)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["m.png"]
    with pytest.raises(ValueError, match="PNG"):
        save_montage(tmp_path / "m.jpg", image, labels=labels)
    assert not (tmp_path / "m.jpg").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "at least one of"),
        ({"samples": torch.rand(2, 2, 5, 5)}, "does not match"),
        ({"calibration_probs": torch.rand(2, 24, 20), "labels": torch.zeros(2, 24, 21)}, "labels must be"),
        ({"samples": torch.rand(2, 24, 20)}, r"samples must be \(S, K"),
        ({"calibration_probs": torch.full((2, 24, 20), float("nan"))}, "NaN"),
        ({"labels": torch.zeros(2, 24, 20), "num_samples": -1}, "num_samples"),
        ({"labels": torch.zeros(2, 24, 20, 5), "slice_index": 9}, "does not match"),
    ],
)
def test_bad_inputs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        montage_figure(torch.rand(1, 24, 20), **kwargs)


def test_real_lidc_sample_montage(tmp_path):
    """A picture of real LIDC crops (no model: the graders stand in for samples). Only checks it renders."""
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"real LIDC sample not found at {SAMPLE_DIR}")
    from PIL import Image

    folder = sorted(p for p in (SAMPLE_DIR / "training").iterdir() if p.is_dir())[0]
    image = np.asarray(Image.open(next(folder.glob("image_*.jpg"))).convert("L"), dtype=np.float32) / 255.0
    labels = np.stack([np.asarray(Image.open(folder / f"label{r}_.jpg").convert("L")) >= 128 for r in range(4)])
    onehot = np.stack([1.0 - labels, labels], axis=1).astype(np.float32)  # (4, 2, 128, 128)
    out = save_montage(
        tmp_path / "real.png",
        image,
        samples=onehot,
        calibration_probs=onehot.mean(0),
        labels=labels.astype(np.uint8),
        title=f"LIDC-IDRI sample {folder.name} (graders as samples)",
    )
    assert out.stat().st_size > 10_000
