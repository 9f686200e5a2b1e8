from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from monai_car.utils.checkpoint import CheckpointKeyError
from monai_car.utils.rng import (
    capture_rng_states,
    derive_seed,
    get_torch_rng_state,
    isolated_rng,
    restore_rng_states,
    set_torch_rng_state,
)

CUDA = torch.cuda.is_available()


def _draws(gen):
    legacy_numpy = float(np.random.rand())  # noqa: NPY002 (the global numpy state is what is recorded)
    return random.random(), legacy_numpy, torch.rand(2).tolist(), torch.rand(1, generator=gen).item()


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(1)
    np.random.seed(1)  # noqa: NPY002
    random.seed(1)
    states = capture_rng_states({"noise": gen})
    expected = _draws(gen)
    torch.save(states, tmp_path / "rng.pt")
    _draws(gen)  # move every generator on
    restore_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True), {"noise": gen})
    assert _draws(gen) == expected
    with pytest.raises(CheckpointKeyError, match=r"generators \['noise'\] but \[\] were given"):
        restore_rng_states(states)
    with pytest.raises(CheckpointKeyError, match="lack"):
        restore_rng_states({"python": states["python"]})


def test_capture_rng_states_rejects_what_is_not_a_generator():
    with pytest.raises(TypeError, match=r"generators\['noise'\] must be a torch.Generator"):
        capture_rng_states({"noise": 3})  # type: ignore[dict-item]


def test_derive_seed_is_stable_and_spread():
    assert derive_seed(0, 1) == derive_seed(0, 1)
    assert len({derive_seed(0, i) for i in range(100)} | {derive_seed(1, 0), derive_seed(0, "case_1")}) == 102
    assert 0 <= derive_seed(2**40, "x", 3) < 2**63
    with pytest.raises(ValueError):
        derive_seed(-1)
    with pytest.raises(ValueError):
        derive_seed(0, 1.5)


def test_derive_seed_values_are_pinned():
    """The seeds are part of every run's numbers: a change here changes every resumed or evaluated run."""
    assert derive_seed(0, "iteration", 1, 0) == 5877557586902944824
    assert derive_seed(5, "case-noise", "case_1") == 3206673771755755115
    assert derive_seed(0, "iteration", 1, 0) == derive_seed(0, "iteration", np.int64(1), 0)
    assert derive_seed(np.int64(7), "x") == derive_seed(7, "x")
    with pytest.raises(ValueError, match="seed must be a non-negative int, got True"):
        derive_seed(True)
    with pytest.raises(ValueError, match="values must be non-negative ints or strings, got False"):
        derive_seed(0, False)


def test_isolated_rng_is_seeded_and_restores_the_outer_state():
    torch.manual_seed(0)
    outer = torch.get_rng_state()
    with isolated_rng(42):
        a = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), outer)
    with isolated_rng(42):
        b = torch.rand(3)
    assert torch.equal(a, b)
    torch.manual_seed(42)
    assert torch.equal(torch.rand(3), a)  # seeded exactly as manual_seed(seed)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        with isolated_rng(-1):
            pass


def test_torch_rng_state_captured_and_restored_replays_the_same_draws():
    torch.manual_seed(3)
    state = get_torch_rng_state("cpu")
    assert state[1] is None  # no CUDA generator on a CPU device
    first = (torch.rand(4), torch.nn.functional.dropout(torch.ones(16), 0.5))
    set_torch_rng_state(state, torch.device("cpu"))
    again = (torch.rand(4), torch.nn.functional.dropout(torch.ones(16), 0.5))
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert torch.equal(get_torch_rng_state(torch.device("cpu"))[0], torch.get_rng_state())


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_torch_rng_state_replays_cuda_draws():
    device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(3)
    state = get_torch_rng_state(device)
    assert state[1] is not None
    first = torch.rand(8, device=device), torch.rand(2)
    set_torch_rng_state(state, device)
    again = torch.rand(8, device=device), torch.rand(2)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_the_public_api_re_exports_the_helpers():
    import monai_car.engines as engines
    import monai_car.utils as utils
    from monai_car.utils import enums, rng

    for name in ("derive_seed", "capture_rng_states", "restore_rng_states", "isolated_rng"):
        assert getattr(utils, name) is getattr(rng, name)
    assert engines.isolated_rng is rng.isolated_rng
    assert engines.RefinementKeys is enums.RefinementKeys is utils.RefinementKeys
