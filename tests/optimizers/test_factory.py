from __future__ import annotations

import pytest
import torch

from monai_car.optimizers import create_car_optimizer, trainable_parameters


def test_car_adam_defaults():
    net = torch.nn.Linear(2, 2)
    opt = create_car_optimizer(net)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.Adam)
    assert (group["lr"], group["betas"], group["weight_decay"]) == (2e-4, (0.5, 0.99), 5e-4)
    assert create_car_optimizer(net, lr=1e-5).param_groups[0]["lr"] == 1e-5


def test_frozen_parameters_are_left_out_and_bad_arguments_fail():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    net[0].requires_grad_(False)
    assert len(trainable_parameters(net)) == 2
    net.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        create_car_optimizer(net)
    with pytest.raises(ValueError, match="lr"):
        create_car_optimizer(torch.nn.Linear(1, 1), lr=0)
    with pytest.raises(ValueError, match="betas"):
        create_car_optimizer(torch.nn.Linear(1, 1), betas=(0.5, 1.0))
