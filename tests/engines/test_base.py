from __future__ import annotations

import pytest
from car_engine_synthetic import make_cases, make_loader, make_networks

from monai_car.engines import CalibrationTrainer
from monai_car.optimizers import create_car_optimizer
from monai_car.utils.checkpoint import CheckpointKeyError


def _trainer(seed=0):
    f = make_networks()[0].calibration_net
    return CalibrationTrainer("cpu", 1, make_loader(make_cases(4)), f, create_car_optimizer(f), seed=seed)


def test_state_dict_holds_seed_and_rng_states_and_loads_strictly():
    trainer = _trainer(seed=3)
    state = trainer.state_dict()
    assert state["seed"] == 3 and set(state["rng_states"]) == {"python", "numpy", "torch", "cuda", "generators"}
    other = _trainer(seed=3)
    other.load_state_dict(state)
    with pytest.raises(ValueError, match="seed=3 but this CalibrationTrainer has seed=4"):
        _trainer(seed=4).load_state_dict(state)
    with pytest.raises(CheckpointKeyError, match=r"unexpected keys \['g_network'\]"):
        other.load_state_dict({**state, "g_network": {}})
    with pytest.raises(CheckpointKeyError, match=r"missing keys \['rng_states'\]"):
        other.load_state_dict({k: v for k, v in state.items() if k != "rng_states"})


def test_iteration_seeds_differ_by_iteration_and_stream():
    trainer = _trainer()
    seeds = {trainer.iteration_seed(1), trainer.iteration_seed(2), trainer.iteration_seed(1, "noise")}
    assert len(seeds) == 3 and trainer.iteration_seed(1) == _trainer().iteration_seed(1)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        _trainer(seed=-1)
