"""SceneSampleWriter: per-image samples and maps, seeded per case (the evaluator's noise), written atomically."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from monai_car.inferers import SceneSampleWriter
from monai_car.networks import CalibrationConvNet, CARNet, RefinementUNet

K = 25


def _net() -> CARNet:
    torch.manual_seed(0)
    f = CalibrationConvNet(in_channels=3 + K, out_channels=K, hidden_channels=4, num_blocks=1)
    g = RefinementUNet(spatial_dims=2, in_channels=3 + 2 * K, out_channels=K, channels=[4, 8], noise_dim=3)
    return CARNet(f, g).eval()


def _cases(n: int = 3) -> list[dict]:
    gen = torch.Generator().manual_seed(1)
    return [{"image": torch.rand(3 + K, 16, 24, generator=gen), "case_id": f"img{i}"} for i in range(n)]


def test_each_case_gets_its_folder_the_same_samples_in_any_order_and_a_summary(tmp_path):
    writer = SceneSampleWriter(_net(), num_samples=4, seed=3, montage=False)
    cases = _cases()
    csv_path = writer.run(cases, tmp_path / "a")
    writer.run(cases[::-1], tmp_path / "b")
    for i in range(3):
        for name in ("sample_00.png", "sample_03.png", "consensus.png", "entropy_calibration.png"):
            a = np.asarray(Image.open(tmp_path / "a" / f"img{i}" / name))
            assert np.array_equal(a, np.asarray(Image.open(tmp_path / "b" / f"img{i}" / name))), name
    probs, samples = writer.predict(cases[0]["image"], "img0")
    hard = samples.argmax(1)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / "img0" / "sample_02.png")), hard[2].numpy())
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["case_id"] for r in rows] == ["img0", "img1", "img2"]
    assert float(rows[0]["mean_entropy_calibration"]) == pytest.approx(
        float(-(probs * probs.clamp_min(1e-12).log()).sum(0).mean()), rel=1e-5
    )


def test_a_failing_case_leaves_no_half_written_folder(tmp_path, monkeypatch):
    writer = SceneSampleWriter(_net(), num_samples=2, montage=False)
    import monai_car.inferers.scene_sampler as module

    calls = {"n": 0}
    original = module._png

    def failing(array, path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        original(array, path)

    monkeypatch.setattr(module, "_png", failing)
    with pytest.raises(OSError, match="disk full"):
        writer.run(_cases(1), tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # neither a case folder nor a summary


def test_bad_input_is_named(tmp_path):
    writer = SceneSampleWriter(_net(), num_samples=2, montage=False)
    with pytest.raises(ValueError, match="empty"):
        writer.run([], tmp_path)
    with pytest.raises(ValueError, match="case 0"):
        writer.run([{"img": torch.rand(3, 4, 4)}], tmp_path)
    with pytest.raises(TypeError, match="CARNet"):
        SceneSampleWriter(torch.nn.Identity())
