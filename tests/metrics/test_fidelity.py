from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_car.metrics import (
    FIDELITY_KEYS,
    FidelityMetric,
    compute_fidelity_terms,
    fidelity_from_terms,
    presence_ece_noise_floor,
)


def _two_class(fg: torch.Tensor) -> torch.Tensor:
    """(B, S, *spatial) foreground probabilities -> (B, S, 2, *spatial)."""
    return torch.stack([1.0 - fg, fg], dim=2)


def _hand_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One 1x4 image, 2 samples, 2 graders, F's foreground probabilities."""
    fg = torch.tensor([[[[0.9, 0.2, 0.6, 0.0]], [[0.7, 0.0, 0.0, 0.0]]]])  # (1, 2, 1, 4)
    labels = torch.tensor([[[[1, 1, 0, 0]], [[0, 0, 0, 0]]]])  # (1, 2, 1, 4)
    f = torch.tensor([[[[0.3, 0.2, 0.1, 0.0]]]])  # F foreground (1, 1, 1, 4)
    return _two_class(fg), labels, torch.cat([1 - f, f], dim=1)


def _h(p: float) -> float:
    return -sum(x * math.log(x) for x in (p, 1 - p) if x > 0)


def test_terms_by_hand():
    samples, labels, probs = _hand_case()
    per_case, bins = compute_fidelity_terms(samples, labels, probs)
    # hard samples: (1, 0, 1, 0) and (1, 0, 0, 0); graders (1, 1, 0, 0), (0, 0, 0, 0)
    # window = union = pixels 0, 1, 2 (pixel 3 is marked by nobody)
    sharp = np.mean([np.mean([_h(0.9), _h(0.7)]), np.mean([_h(0.2), _h(0.0)]), np.mean([_h(0.6), _h(0.0)])])
    sharpness, window, q, g, f_max, r, s = per_case[0].tolist()
    assert sharpness == pytest.approx(sharp)
    assert (window, q, g, r, s) == (3, 1.0, 0.5, 2, 2)
    assert f_max == pytest.approx(0.3)
    # window pixels: conf (1, 0, 0.5), target (0.5, 0.5, 0): bin 9, bin 0, bin 4
    assert bins[0, 0].tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    assert bins[0, 1].sum().item() == pytest.approx(1.5)
    assert bins[0, 2].sum().item() == pytest.approx(1.0)
    values, tables = fidelity_from_terms(per_case, bins)
    # |1 - 0.5| + |0 - 0.5| + |0.5 - 0| over 3 pixels
    assert values["hard_pixel_ece"] == pytest.approx(1.5 / 3)
    # one case, q = 1 vs g = 0.5: presence ECE 0.5; not all graders marked it: no F fit
    assert values["presence_ece"] == pytest.approx(0.5)
    assert math.isnan(values["f_fit"]) and values["f_fit_cases"] == 0
    assert tables["presence"]["count"].tolist() == [0, 0, 0, 0, 1]
    assert set(values) == set(FIDELITY_KEYS)


def test_presence_bins_and_f_fit_by_hand():
    # 4 cases, 2 graders, 4 samples of 1x2 images; q = (0, 0.25, 0.75, 1), g = (0, 0.5, 1, 1)
    hard = torch.zeros(4, 4, 1, 2)
    hard[1, 0, 0, 0] = 1
    hard[2, :3, 0, 1] = 1
    hard[3, :, 0, 0] = 1
    labels = torch.zeros(4, 2, 1, 2, dtype=torch.bool)
    labels[1, 0, 0, 0] = True
    labels[2, :, 0, 1] = True
    labels[3, :, 0, 0] = True
    f = torch.tensor([0.1, 0.4, 0.8, 0.95]).reshape(4, 1, 1, 1).expand(4, 1, 1, 2)
    per_case, bins = compute_fidelity_terms(_two_class(hard), labels, torch.cat([1 - f, f], 1))
    assert per_case[:, 2].tolist() == [0, 0.25, 0.75, 1]
    assert per_case[:, 3].tolist() == [0, 0.5, 1, 1]
    values, tables = fidelity_from_terms(per_case, bins)
    # 5 right-closed bins, 0 in the first: q = 0 -> bin 0, 0.25 -> (0.2, 0.4], 0.75 -> (0.6, 0.8], 1 -> (0.8, 1]
    assert tables["presence"]["count"].tolist() == [1, 1, 0, 1, 1]
    # |0-0| + |0.25-0.5| + |0.75-1| + |1-1| over 4 cases
    assert values["presence_ece"] == pytest.approx(0.5 / 4)
    # cases every grader marked: 2 and 3, F max 0.8 and 0.95 -> median 0.875
    assert values["f_fit"] == pytest.approx(0.875)
    assert values["f_fit_cases"] == 2
    # label-like samples: entropy 0
    assert values["sample_sharpness"] == pytest.approx(0.0)


def _random_graders(gen: torch.Generator, b: int, r: int, size: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.zeros(b, r, size, size, dtype=torch.bool)
    for i in range(b):
        present = torch.rand(r, generator=gen) < torch.rand((), generator=gen)
        c = torch.randint(5, size - 5, (2,), generator=gen)
        for j in range(r):
            if present[j]:
                rad = torch.randint(2, 5, (), generator=gen)
                labels[i, j] = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= rad**2
    return labels


def _independent_pixel_ece(hard: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """Per-pixel loop: confidence = fraction of samples, target = fraction of graders, window = union."""
    confs, targets = [], []
    for i in range(hard.shape[0]):
        window = hard[i].any(0) | labels[i].any(0)
        confs.extend(hard[i].mean(0)[window].tolist())
        targets.extend(labels[i].mean(0)[window].tolist())
    confs, targets = np.array(confs), np.array(targets)
    idx = np.clip(np.ceil(confs * bins).astype(int) - 1, 0, bins - 1)
    return sum(abs(confs[idx == m].sum() - targets[idx == m].sum()) for m in range(bins)) / confs.size


def test_samples_drawn_from_graders_are_calibrated():
    """A model calibrated by construction: each hard sample is one of the graders' masks drawn at random."""
    gen = torch.Generator().manual_seed(0)
    b, r, s = 60, 4, 400
    labels = _random_graders(gen, b, r, 24)
    pick = torch.randint(0, r, (b, s), generator=gen)
    hard = labels[torch.arange(b)[:, None], pick].float()
    metric = FidelityMetric(floor_repeats=300)
    for start in range(0, b, 16):  # accumulated over batches
        sl = slice(start, start + 16)
        metric(_two_class(hard[sl]), labels[sl], calibration_probs=_two_class(hard[sl]).mean(1))
    values = metric.aggregate()
    independent = _independent_pixel_ece(hard.numpy().astype(bool), labels.numpy(), 10)
    assert values["hard_pixel_ece"] == pytest.approx(independent, abs=1e-9)
    # sampling noise of S = 400 draws of 4 masks: |freq - 1/4 multiples| ~ sqrt(p(1-p)/S) <= 0.025
    assert values["hard_pixel_ece"] < 0.03
    assert values["presence_ece"] < 0.03
    assert values["sample_sharpness"] == 0.0
    # the same figures from one call over all cases
    one = FidelityMetric(floor_repeats=300)
    one(_two_class(hard), labels, calibration_probs=_two_class(hard).mean(1))
    assert one.aggregate() == pytest.approx(values, nan_ok=True)


def test_miscalibrated_samples_are_caught():
    """Samples that always draw the first grader: presence and pixel frequencies no longer the graders'."""
    gen = torch.Generator().manual_seed(1)
    labels = _random_graders(gen, 40, 4, 24)
    hard = labels[:, :1].expand(40, 32, 24, 24).float()
    metric = FidelityMetric()
    metric(_two_class(hard), labels)
    values = metric.aggregate()
    independent = _independent_pixel_ece(hard.numpy().astype(bool), labels.numpy(), 10)
    assert values["hard_pixel_ece"] == pytest.approx(independent, abs=1e-9)
    assert values["hard_pixel_ece"] > 0.2
    assert values["presence_ece"] > 0.1
    assert math.isnan(values["f_fit"])  # no F given


def test_soft_samples_have_high_entropy():
    labels = torch.ones(2, 4, 4, 4, dtype=torch.bool)
    fg = torch.full((2, 8, 4, 4), 0.5)
    values, _ = fidelity_from_terms(*compute_fidelity_terms(_two_class(fg), labels))
    assert values["sample_sharpness"] == pytest.approx(math.log(2))
    # a single foreground channel (K = 1) reads the same
    values_k1, _ = fidelity_from_terms(*compute_fidelity_terms(fg[:, :, None], labels))
    assert values_k1["sample_sharpness"] == pytest.approx(math.log(2))


def test_num_samples_uses_the_first_samples():
    labels = torch.ones(1, 2, 2, 2, dtype=torch.bool)
    hard = torch.zeros(1, 4, 2, 2)
    hard[0, :2] = 1  # first two samples mark everything, the last two nothing
    first = FidelityMetric(num_samples=2)
    first(_two_class(hard), labels)
    everything = FidelityMetric()
    everything(_two_class(hard), labels)
    assert first.aggregate()["presence_ece"] == pytest.approx(0.0)
    assert everything.aggregate()["presence_ece"] == pytest.approx(0.5)


def test_noise_floor_matches_an_independent_simulation():
    p = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0] * 18, dtype=torch.float64)
    mean, p95 = presence_ece_noise_floor(p, 4, 64, num_bins=5, repeats=400, seed=0)
    rng = np.random.default_rng(123)
    eces = []
    for _ in range(400):
        q = rng.binomial(64, p.numpy()) / 64
        g = rng.binomial(4, p.numpy()) / 4
        idx = np.clip(np.ceil(q * 5).astype(int) - 1, 0, 4)
        eces.append(sum(abs(q[idx == m].sum() - g[idx == m].sum()) for m in range(5)) / q.size)
    assert mean == pytest.approx(np.mean(eces), abs=0.006)
    assert p95 >= mean
    # 0 / 1 probabilities leave nothing to chance
    assert presence_ece_noise_floor(torch.tensor([0.0, 1.0, 1.0]), 4, 16) == (0.0, 0.0)
    # reproducible from the seed
    assert presence_ece_noise_floor(p, 4, 64, seed=3) == presence_ece_noise_floor(p, 4, 64, seed=3)


@pytest.mark.parametrize(
    "samples, labels, match",
    [
        (torch.rand(2, 3, 2, 4, 4), torch.ones(2, 4, 5, 4), "must be"),
        (torch.rand(2, 3, 3, 4, 4), torch.ones(2, 4, 4, 4), "K = 1 or 2"),
        (torch.rand(2, 3, 2, 4, 4) * 2, torch.ones(2, 4, 4, 4), r"\[0, 1\]"),
        (torch.rand(2, 3, 2, 4, 4), torch.full((2, 4, 4, 4), 2), "binary"),
        (torch.rand(2, 2, 4), torch.ones(2, 4), "must be"),
    ],
)
def test_bad_input(samples, labels, match):
    with pytest.raises(ValueError, match=match):
        compute_fidelity_terms(samples, labels)


def test_bad_arguments():
    with pytest.raises(TypeError, match="torch.Tensor"):
        compute_fidelity_terms(np.zeros((1, 1, 2, 2, 2)), torch.ones(1, 1, 2, 2))
    with pytest.raises(ValueError, match="calibration_probs"):
        compute_fidelity_terms(torch.rand(1, 2, 2, 4, 4), torch.ones(1, 2, 4, 4), torch.rand(1, 2, 3, 4))
    with pytest.raises(ValueError, match="num_samples"):
        FidelityMetric(num_samples=0)
    with pytest.raises(ValueError, match="y"):
        FidelityMetric()(torch.rand(1, 2, 2, 4, 4))
