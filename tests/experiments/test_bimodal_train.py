from __future__ import annotations

import pytest
import torch

from experiments.bimodal_data import bimodal_branches
from experiments.bimodal_train import (
    BimodalConfig,
    build_nets,
    discriminator_active,
    evaluate_calibration,
    train_bimodal,
    unbiased_gaussian_calibration_loss,
)
from monai_car.losses import GaussianCalibrationLoss

TINY = {
    "iterations": 30,
    "batch_size": 16,
    "num_samples": 4,
    "hidden": 16,
    "eval_every": 10,
    "eval_points": 5,
    "calibration_pretrain_iterations": 20,
    "calibration_batch_size": 32,
}
TINY_EVAL = {"eval_samples": 8, "final_eval_samples": 20}


def _params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pi": 1.1},
        {"sigma": -1.0},
        {"iterations": 0},
        {"num_samples": 0},
        {"seed": -1},
        {"lr": 0.0},
        {"pi": True},
        {"discriminator_lr": 2.0},
        {"discriminator_on": 0},
        {"discriminator_off": -1},
        {"r1_weight": -1.0},
        {"calibration_pretrain_iterations": -1},
        {"calibration_estimator": "plugin"},
        {"num_samples": 1},  # the unbiased estimator needs two samples
        {"eval_min_separation": 1.0},
    ],
)
def test_config_validates(kwargs):
    with pytest.raises(ValueError):
        BimodalConfig(**kwargs)


def test_paper_defaults():
    cfg = BimodalConfig()
    assert cfg.lr == 1e-4 and cfg.num_samples == 10
    nets = build_nets(cfg)
    linears = [m for m in nets.generator.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4  # 4-layer MLP
    assert linears[0].in_features == 2 + cfg.noise_dim  # x, F(x), z
    assert sum(isinstance(m, torch.nn.Linear) for m in nets.discriminator.modules()) == 4
    assert sum(isinstance(m, torch.nn.Linear) for m in nets.calibration.modules()) == 4


def test_build_nets_seeded_without_touching_global_rng():
    state = torch.get_rng_state()
    a, b = build_nets(BimodalConfig(seed=5)), build_nets(BimodalConfig(seed=5))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(_params(a), _params(b))
    assert not torch.equal(_params(a), _params(build_nets(BimodalConfig(seed=6))))


def test_sample_shapes_and_conditioning():
    nets = build_nets(BimodalConfig(hidden=8, noise_dim=3))
    x = torch.rand(5, 1)
    f, samples = nets.sample(x, 7, torch.Generator().manual_seed(0))
    assert f.shape == (5, 1) and samples.shape == (5, 7, 1)
    assert not f.requires_grad
    torch.testing.assert_close(f, nets.calibration(x).detach())
    assert samples[:, 1:].sub(samples[:, :1]).abs().max() > 0  # noise makes the M samples differ
    with pytest.raises(ValueError):
        nets.sample(torch.rand(5), 2, torch.Generator())


def test_short_run_is_reproducible():
    cfg = BimodalConfig(pi=0.6, sigma=0.02, seed=3, **TINY, **TINY_EVAL)
    a, b = train_bimodal(cfg), train_bimodal(cfg)
    assert [h["iteration"] for h in a.history] == [0, 10, 20, 30]
    assert a.history == b.history
    assert a.mode_frequency == b.mode_frequency and a.calibration_offset == b.calibration_offset
    assert torch.equal(_params(a.nets), _params(b.nets))
    c = train_bimodal(BimodalConfig(pi=0.6, sigma=0.02, seed=4, **TINY, **TINY_EVAL))
    assert not torch.equal(_params(a.nets.generator), _params(c.nets.generator))


@pytest.mark.parametrize("pretrain", [20, 0])
def test_lambda_changes_only_g_and_d(pretrain):
    """F is trained (first, or jointly) on its own loss: lambda must not touch it, but must change G."""
    kw = {**TINY, **TINY_EVAL, "calibration_pretrain_iterations": pretrain}
    runs = {lam: train_bimodal(BimodalConfig(calibration_weight=lam, **kw)) for lam in (0.0, 1.0)}
    assert torch.equal(_params(runs[0.0].nets.calibration), _params(runs[1.0].nets.calibration))
    assert not torch.equal(_params(runs[0.0].nets.generator), _params(runs[1.0].nets.generator))
    assert runs[1.0].losses.keys() == {"F", "G_adv", "G_cal", "D"}


def _mean_gap(run) -> float:
    """|mean over M of G - F| on a grid of x: what L_cal penalises."""
    x = torch.linspace(0.0, 1.0, 41)[:, None]
    with torch.no_grad():
        f, samples = run.nets.sample(x, 200, torch.Generator().manual_seed(0))
    return float((samples.mean(dim=1) - f).abs().mean())


def test_calibration_loss_pulls_sample_mean_to_f():
    kw = {**TINY, "iterations": 200, "eval_every": 200, **TINY_EVAL}
    gaps = {lam: _mean_gap(train_bimodal(BimodalConfig(calibration_weight=lam, **kw))) for lam in (0.0, 100.0)}
    assert gaps[100.0] < 0.5 * gaps[0.0], gaps


def test_evaluate_calibration_offset_matches_frequencies():
    nets = build_nets(BimodalConfig(hidden=8))
    freqs, offset = evaluate_calibration(nets, 0.9, 6, 10, seed=0)
    assert set(freqs) == {"0.0-0.4", "0.4-0.8"}
    assert offset == pytest.approx(sum(abs(v - 0.9) for v in freqs.values()) / 2)
    assert evaluate_calibration(nets, 0.9, 6, 10, seed=0) == (freqs, offset)  # fixed evaluation noise
    with pytest.raises(ValueError):
        evaluate_calibration(nets, 0.9, 6, 0, seed=0)


def test_discriminator_cycle_pattern():
    assert [discriminator_active(i, 2, 3) for i in range(1, 12)] == [1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1]
    assert all(discriminator_active(i, 5, 0) for i in range(1, 20))
    with pytest.raises(ValueError):
        discriminator_active(0, 1, 1)


def test_frozen_discriminator_is_not_updated():
    """With cycles of 1 update and 10 frozen iterations, D after 6 iterations is D after 1; G keeps learning."""
    kw = {**TINY, **TINY_EVAL, "discriminator_on": 1, "discriminator_off": 10}
    one, six = (train_bimodal(BimodalConfig(**{**kw, "iterations": n, "eval_every": 1})) for n in (1, 6))
    assert (one.discriminator_updates, six.discriminator_updates) == (1, 1)
    assert torch.equal(_params(one.nets.discriminator), _params(six.nets.discriminator))
    assert not torch.equal(_params(one.nets.generator), _params(six.nets.generator))
    every = train_bimodal(BimodalConfig(**{**kw, "iterations": 6, "eval_every": 6, "discriminator_off": 0}))
    assert every.discriminator_updates == 6
    assert not torch.equal(_params(every.nets.discriminator), _params(six.nets.discriminator))


def _real_input_gradient(run, n: int = 256) -> float:
    """Mean squared d D / d (x, y) on real pairs, what R1 penalises."""
    from experiments.bimodal_data import sample_bimodal

    x, y, _ = sample_bimodal(n, run.config.pi, run.config.sigma, torch.Generator().manual_seed(9))
    inputs = torch.cat([x, y], dim=1).requires_grad_(True)
    (grad,) = torch.autograd.grad(run.nets.discriminator(inputs).sum(), inputs)
    return float(grad.pow(2).sum(dim=1).mean())


def test_r1_flattens_discriminator_on_real_data():
    kw = {**TINY, **TINY_EVAL, "iterations": 150, "eval_every": 150, "discriminator_off": 0, "lr": 1e-3}
    plain, r1 = (_real_input_gradient(train_bimodal(BimodalConfig(**kw, r1_weight=w))) for w in (0.0, 10.0))
    assert r1 < 0.5 * plain, (r1, plain)


def test_unbiased_calibration_estimator_removes_the_variance_term():
    """Over many draws of M = 4 samples of a 90 / 10 two-point mixture the plug-in estimate exceeds
    0.5 * (E G - F)^2 by Var(G) / (2 M); the unbiased one does not."""
    g = torch.Generator().manual_seed(0)
    b = torch.rand(20000, 4, 1, generator=g) < 0.9
    samples = torch.where(b, -0.5, 0.5)  # mean -0.4, variance 0.09
    target = torch.full((20000, 1), -0.35)
    exact = 0.5 * 0.05**2
    assert float(unbiased_gaussian_calibration_loss(samples, target)) == pytest.approx(exact, abs=4e-4)
    biased = float(GaussianCalibrationLoss()(samples, target))
    assert biased == pytest.approx(exact + 0.09 / 8, abs=4e-4)
    with pytest.raises(ValueError):
        unbiased_gaussian_calibration_loss(samples[:, :1], target)


def test_stage_one_fits_f_then_freezes_it():
    kw = {**TINY, **TINY_EVAL, "pi": 0.9, "calibration_pretrain_iterations": 300, "calibration_batch_size": 256}
    run = train_bimodal(BimodalConfig(**kw, calibration_lr=3e-3))
    x = torch.linspace(0.02, 0.98, 25)
    y0, y1 = bimodal_branches(x)
    with torch.no_grad():
        err = (run.nets.calibration(x[:, None])[:, 0] - (0.1 * y0 + 0.9 * y1)).abs().mean()
    assert err < 0.03, err  # the conditional mean, not a mode
    assert not any(p.requires_grad for p in run.nets.calibration.parameters())
    longer = train_bimodal(BimodalConfig(**{**kw, "iterations": 60}, calibration_lr=3e-3))
    assert torch.equal(_params(run.nets.calibration), _params(longer.nets.calibration))  # stage 2 leaves F alone
