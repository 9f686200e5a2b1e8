from __future__ import annotations

import pytest
import torch

from monai_car.experiments.bimodal_train import BimodalConfig, build_nets, evaluate_calibration, train_bimodal

TINY = {"iterations": 30, "batch_size": 16, "num_samples": 4, "hidden": 16, "eval_every": 10, "eval_points": 5}
TINY_EVAL = {"eval_samples": 8, "final_eval_samples": 20}


def _params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


@pytest.mark.parametrize(
    "kwargs",
    [{"pi": 1.1}, {"sigma": -1.0}, {"iterations": 0}, {"num_samples": 0}, {"seed": -1}, {"lr": 0.0}, {"pi": True}],
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


def test_lambda_changes_only_g_and_d():
    """F is trained on the same data stream with its own loss: lambda must not touch it, but must change G."""
    runs = {lam: train_bimodal(BimodalConfig(calibration_weight=lam, **TINY, **TINY_EVAL)) for lam in (0.0, 1.0)}
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
