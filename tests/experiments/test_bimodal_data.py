from __future__ import annotations

import pytest
import torch

from experiments.bimodal_data import (
    BIMODAL_REGIONS,
    bimodal_branches,
    calibration_offset,
    evaluation_grid,
    mode_frequency,
    off_branch_fraction,
    sample_bimodal,
)


def test_branches_hand_values():
    x = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.79, 0.8, 1.0])
    y0, y1 = bimodal_branches(x)
    # region 1: 0.5 - b; region 2: (-1)^b * (-1.25 x + 1); region 3: 0
    torch.testing.assert_close(y0, torch.tensor([0.5, 0.5, 0.5, 0.25, 0.0125, 0.0, 0.0]))
    torch.testing.assert_close(y1, torch.tensor([-0.5, -0.5, -0.5, -0.25, -0.0125, 0.0, 0.0]))


def test_branches_reject_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bimodal_branches(torch.tensor([1.2]))
    with pytest.raises(ValueError, match="floating"):
        bimodal_branches(torch.tensor([0, 1]))


def test_noise_free_samples_lie_on_their_branch():
    x, y, b = sample_bimodal(1000, 0.6, 0.0, torch.Generator().manual_seed(1))
    y0, y1 = bimodal_branches(x)
    torch.testing.assert_close(y, torch.where(b > 0, y1, y0))
    assert set(b.unique().tolist()) == {0.0, 1.0}


def test_sample_frequencies_and_noise():
    n, pi, sigma = 200_000, 0.6, 0.03
    x, y, b = sample_bimodal(n, pi, sigma, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == b.shape == (n, 1)
    assert float(x.min()) >= 0.0 and float(x.max()) < 1.0
    # x uniform: 40 % / 40 % / 20 % in the three regions (binomial std ~0.0011)
    first, third = x < 0.4, x >= 0.8
    assert abs(float(first.float().mean()) - 0.4) < 0.006
    assert abs(float(third.float().mean()) - 0.2) < 0.006
    # b ~ Bernoulli(pi); the lower mode of region 1 is taken with probability pi
    assert abs(float(b.mean()) - pi) < 0.006
    assert abs(float((y[first] < 0).float().mean()) - pi) < 0.01
    # residuals around the chosen branch are N(0, sigma)
    y0, y1 = bimodal_branches(x)
    resid = y - torch.where(b > 0, y1, y0)
    assert abs(float(resid.mean())) < 1e-3
    assert abs(float(resid.std()) - sigma) < 1e-3
    # the last region is unimodal: y = e
    assert abs(float(y[third].std()) - sigma) < 1e-3


def test_sample_is_deterministic_per_generator_seed():
    a = sample_bimodal(50, 0.9, 0.02, torch.Generator().manual_seed(3))
    b = sample_bimodal(50, 0.9, 0.02, torch.Generator().manual_seed(3))
    c = sample_bimodal(50, 0.9, 0.02, torch.Generator().manual_seed(4))
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v)
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num": 0}, "num"),
        ({"pi": 1.5}, "pi"),
        ({"sigma": -0.1}, "sigma"),
        ({"generator": 3}, "generator"),
    ],
)
def test_sample_validates(kwargs, match):
    args = {"num": 10, "pi": 0.5, "sigma": 0.01, "generator": torch.Generator()}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sample_bimodal(**args)


def test_evaluation_grid_cell_centres():
    grid = evaluation_grid(4)
    assert list(grid) == list(BIMODAL_REGIONS) == ["0.0-0.4", "0.4-0.8"]
    torch.testing.assert_close(grid["0.0-0.4"], torch.tensor([0.05, 0.15, 0.25, 0.35]))
    torch.testing.assert_close(grid["0.4-0.8"], torch.tensor([0.45, 0.55, 0.65, 0.75]))
    with pytest.raises(ValueError):
        evaluation_grid(0)


def test_evaluation_grid_min_separation():
    grid = evaluation_grid(4, min_separation=0.2)
    torch.testing.assert_close(grid["0.0-0.4"], evaluation_grid(4)["0.0-0.4"])  # branches always 1 apart there
    torch.testing.assert_close(grid["0.4-0.8"], torch.tensor([0.44, 0.52, 0.60, 0.68]))  # [0.4, 0.72)
    y0, y1 = bimodal_branches(evaluation_grid(50, min_separation=0.3)["0.4-0.8"])
    assert float((y0 - y1).min()) >= 0.3
    for bad in (-0.1, 1.0, True):
        with pytest.raises(ValueError, match="min_separation"):
            evaluation_grid(4, min_separation=bad)


def _data_frequencies(pi: float, sigma: float, min_separation: float) -> list[float]:
    """Mode frequencies of the data itself (a perfect sampler) on the evaluation grid."""
    g = torch.Generator().manual_seed(0)
    out = []
    for x in evaluation_grid(50, min_separation).values():
        y0, y1 = bimodal_branches(x)
        b = torch.rand(50, 4000, generator=g) < pi
        y = torch.where(b, y1[:, None], y0[:, None]) + sigma * torch.randn(50, 4000, generator=g)
        out.append(mode_frequency(x, y))
    return out


def test_data_scores_pi_only_where_the_branches_are_apart():
    """Where the lines of [0.4, 0.8) meet, nearest-branch counting misreads the data itself (0.881 at pi 0.9)."""
    full = _data_frequencies(0.9, 0.03, 0.0)
    assert abs(full[0] - 0.9) < 0.003 and abs(full[1] - 0.881) < 0.004
    assert all(abs(f - 0.9) < 0.003 for f in _data_frequencies(0.9, 0.03, 0.2))


def test_mode_frequency_hand_made():
    x = torch.tensor([0.2, 0.6])  # branches: +-0.5 and +-0.25
    samples = torch.tensor(
        [
            [-0.5, -0.1, 0.0, 0.7],  # b=1, b=1 (0.4 < 0.6), midway -> b=0, b=0
            [-0.25, -0.01, 0.3, -2.0],  # b=1, b=1 (0.24 < 0.26), b=0, b=1
        ]
    )
    assert mode_frequency(x, samples) == pytest.approx(5 / 8)
    assert mode_frequency(x[:1], samples[:1]) == pytest.approx(2 / 4)


def test_mode_frequency_validates():
    with pytest.raises(ValueError, match="bimodal regions"):
        mode_frequency(torch.tensor([0.85]), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(N, S\)"):
        mode_frequency(torch.tensor([0.1, 0.2]), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="finite"):
        mode_frequency(torch.tensor([0.1]), torch.tensor([[float("nan")]]))


def test_off_branch_fraction_hand_made():
    x = torch.tensor([0.2, 0.6])  # branches: +-0.5 and +-0.25
    samples = torch.tensor([[-0.5, 0.45, 0.0, 0.7], [-0.26, 0.25, 0.1, -0.4]])
    # off (> 0.1 from both): 0.0 and 0.7 in the first row, 0.1 and -0.4 in the second
    assert off_branch_fraction(x, samples, 0.1) == pytest.approx(4 / 8)
    assert off_branch_fraction(x, samples, 0.3) == pytest.approx(1 / 8)  # only 0.0 (0.5 away)
    with pytest.raises(ValueError, match="tolerance"):
        off_branch_fraction(x, samples, 0.0)
    with pytest.raises(ValueError, match="bimodal regions"):
        off_branch_fraction(torch.tensor([0.9]), samples[:1], 0.1)


def test_calibration_offset_hand_made():
    assert calibration_offset({"0.0-0.4": 0.8, "0.4-0.8": 0.95}, 0.9) == pytest.approx(0.075)
    assert calibration_offset({"0.0-0.4": 0.5, "0.4-0.8": 0.5}, 0.5) == 0.0
    with pytest.raises(ValueError):
        calibration_offset({}, 0.5)
    with pytest.raises(ValueError):
        calibration_offset({"a": 1.2}, 0.5)
