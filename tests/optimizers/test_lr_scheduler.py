from __future__ import annotations

import warnings

import pytest
import torch

from monai_car.optimizers import create_car_optimizer, create_lr_scheduler


def _lrs(policy, steps, lr=2e-4, **kwargs):
    opt = create_car_optimizer(torch.nn.Linear(1, 1), lr=lr)
    scheduler = create_lr_scheduler(opt, policy, **kwargs)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping the scheduler without optimizer steps
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            scheduler.step()
    return out


def test_step_policy_halves_once_after_30_epochs():
    lrs = _lrs("step", 70)
    assert lrs[:30] == [2e-4] * 30 and lrs[30:] == pytest.approx([1e-4] * 40)
    assert _lrs("step", 32, lr=1e-5)[-1] == pytest.approx(5e-6)


def test_linear_and_constant_policies():
    lrs = _lrs("linear", 6, total_steps=4, final_factor=0.5)
    assert lrs == pytest.approx([2e-4, 1.75e-4, 1.5e-4, 1.25e-4, 1e-4, 1e-4])
    assert _lrs("constant", 3) == [2e-4] * 3


def test_bad_arguments():
    opt = create_car_optimizer(torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="policy"):
        create_lr_scheduler(opt, "cosine")
    with pytest.raises(ValueError, match="total_steps"):
        create_lr_scheduler(opt, "linear")
    with pytest.raises(TypeError, match="Optimizer"):
        create_lr_scheduler("opt")
