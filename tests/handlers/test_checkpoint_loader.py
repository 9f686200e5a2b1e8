from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from monai_car.handlers import StrictCheckpointLoader
from monai_car.utils.checkpoint import CheckpointKeyError, save_checkpoint


def _engine(max_epochs=3):
    engine = Engine(lambda e, b: None)
    engine.state.max_epochs = max_epochs
    return engine


def test_loads_everything_and_keeps_max_epochs(tmp_path):
    net, opt_net = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)
    opt = torch.optim.Adam(net.parameters())
    net(torch.rand(1, 2)).sum().backward()
    opt.step()
    source = Engine(lambda e, b: None)
    source.run([0, 1], max_epochs=1)
    path = save_checkpoint(tmp_path / "c.pt", {"net": net, "opt": opt, "trainer": source})
    target_opt = torch.optim.Adam(opt_net.parameters())
    engine = _engine(max_epochs=5)
    StrictCheckpointLoader(path, {"net": opt_net, "opt": target_opt, "trainer": engine})(engine)
    assert torch.equal(opt_net.weight, net.weight) and engine.state.iteration == 2 and engine.state.max_epochs == 5
    assert target_opt.state_dict()["state"][0]["step"] == 1


def test_missing_and_unexpected_entries_are_named(tmp_path):
    path = save_checkpoint(
        tmp_path / "c.pt", {"calibration_net": torch.nn.Linear(2, 2), "extra": torch.nn.Linear(1, 1)}
    )
    engine = _engine()
    loader = StrictCheckpointLoader(
        path, {"calibration_net": torch.nn.Linear(2, 2), "refinement_net": torch.nn.Linear(2, 2)}
    )
    with pytest.raises(
        CheckpointKeyError, match=r"missing entries \['refinement_net'\], unexpected entries \['extra'\]"
    ):
        loader(engine)


def test_network_mismatch_names_the_keys_and_loads_nothing(tmp_path):
    saved = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    path = save_checkpoint(tmp_path / "c.pt", {"a": torch.nn.Linear(2, 2), "net": saved})
    a = torch.nn.Linear(2, 2)
    a_before = a.weight.clone()
    with pytest.raises(CheckpointKeyError, match=r"'net'.*missing keys \['3.bias', '3.weight'\]"):
        StrictCheckpointLoader(
            path, {"a": a, "net": torch.nn.Sequential(*saved, torch.nn.ReLU(), torch.nn.Linear(2, 2))}
        )(_engine())
    assert torch.equal(a.weight, a_before), "nothing is loaded when any entry mismatches"
    with pytest.raises(CheckpointKeyError, match=r"other shapes.*0.weight: checkpoint \(2, 2\) vs network \(3, 2\)"):
        StrictCheckpointLoader(
            path, {"a": a, "net": torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 2))}
        )(_engine())


def test_missing_file_and_epoch_beyond_max(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StrictCheckpointLoader(tmp_path / "none.pt", {"a": torch.nn.Linear(1, 1)})(_engine())
    source = Engine(lambda e, b: None)
    source.run([0], max_epochs=4)
    path = save_checkpoint(tmp_path / "c.pt", {"trainer": source})
    engine = _engine(max_epochs=2)
    with pytest.raises(ValueError, match="epoch 4, beyond the engine's max_epochs"):
        StrictCheckpointLoader(path, {"trainer": engine})(engine)
