from __future__ import annotations

import os
import pickle

import pytest
import torch
from ignite.engine import Engine, Events

from monai_car.handlers import AtomicCheckpointSaver
from monai_car.utils.checkpoint import load_checkpoint


class _Exploding:
    """An object whose state cannot be serialised: saving it must fail without leaving a file behind."""

    def state_dict(self):
        return {"fn": lambda: None}


def test_interval_and_final_checkpoints_are_written_and_loadable(tmp_path):
    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    AtomicCheckpointSaver(
        str(tmp_path), {"net": net, "engine": engine}, save_interval=2, epoch_level=False, save_final=True,
        final_filename="final.pt",
    ).attach(engine)  # fmt: skip
    engine.run([0, 1, 2], max_epochs=2)
    names = sorted(os.listdir(tmp_path))
    assert names == ["checkpoint_iteration=2.pt", "checkpoint_iteration=4.pt", "checkpoint_iteration=6.pt", "final.pt"]
    assert not [n for n in names if n.endswith(".tmp") or n.startswith("tmp")]
    target = torch.nn.Linear(2, 2)
    other = Engine(lambda e, b: None)
    load_checkpoint(tmp_path / "final.pt", {"net": target, "engine": other})
    assert torch.equal(target.weight, net.weight) and other.state.iteration == 6
    (tmp_path / "made_by_open").write_bytes(b"")  # permissions as for open() (0644 under umask 0022), not 0600
    assert os.stat(tmp_path / "final.pt").st_mode == os.stat(tmp_path / "made_by_open").st_mode


def test_epoch_boundary_checkpoint_waits_for_epoch_completed_handlers(tmp_path):
    engine = Engine(lambda e, b: None)
    engine.state.decays = 0
    saved = {}

    class Recorder:
        def state_dict(self):
            saved[engine.state.iteration] = engine.state.decays
            return {"decays": engine.state.decays}

    AtomicCheckpointSaver(str(tmp_path), {"rec": Recorder()}, save_interval=1, epoch_level=False).attach(engine)

    @engine.on(Events.EPOCH_COMPLETED)
    def _decay(e):  # registered after the saver, like an LR scheduler handler
        e.state.decays += 1

    engine.run([0, 1], max_epochs=2)
    assert saved == {1: 0, 2: 1, 3: 1, 4: 2}


def test_a_failed_save_leaves_nothing_half_written(tmp_path):
    engine = Engine(lambda e, b: None)
    (tmp_path / "final.pt").write_bytes(b"previous")
    AtomicCheckpointSaver(str(tmp_path), {"bad": _Exploding()}, save_final=True, final_filename="final.pt").attach(
        engine
    )
    with pytest.raises((pickle.PicklingError, AttributeError), match="pickle"):
        engine.run([0], max_epochs=1)
    assert sorted(os.listdir(tmp_path)) == ["final.pt"]
    assert (tmp_path / "final.pt").read_bytes() == b"previous"


def test_replaced_checkpoints_are_removed_only_after_the_new_one_is_written(tmp_path):
    engine = Engine(lambda e, b: None)
    AtomicCheckpointSaver(str(tmp_path), {"net": torch.nn.Linear(1, 1)}, save_interval=1, n_saved=2).attach(engine)
    engine.run([0], max_epochs=4)
    assert sorted(os.listdir(tmp_path)) == ["net_epoch=3.pt", "net_epoch=4.pt"]


def test_key_metric_history_survives_a_resume(tmp_path):
    def evaluation(values):
        engine = Engine(lambda e, b: None)
        scores = iter(values)
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(ged=next(scores)))
        return engine

    net = torch.nn.Linear(1, 1)
    options = {"save_key_metric": True, "key_metric_name": "ged", "key_metric_negative_sign": True}
    saver = AtomicCheckpointSaver(str(tmp_path), {"net": net}, key_metric_filename="best.pt", **options)
    first = evaluation([0.3])
    saver.attach(first)
    first.run([0], max_epochs=1)
    state = saver.state_dict()
    best = (tmp_path / "best.pt").read_bytes()
    resumed = AtomicCheckpointSaver(
        str(tmp_path), {"net": torch.nn.Linear(2, 2)}, key_metric_filename="best.pt", **options
    )
    resumed.load_state_dict(state)
    second = evaluation([0.5])  # worse than the 0.3 before the resume: best.pt must stay
    resumed.attach(second)
    second.run([0], max_epochs=1)
    assert (tmp_path / "best.pt").read_bytes() == best
    with pytest.raises(ValueError, match="no key metric"):
        AtomicCheckpointSaver(str(tmp_path), {"net": net}, save_final=True).state_dict()


def test_save_dict_is_checked():
    with pytest.raises(TypeError, match=r"save_dict\['x'\].*state_dict"):
        AtomicCheckpointSaver("/tmp", {"x": 3}, save_final=True)


def test_an_adopted_interval_checkpoint_is_replaced_like_the_savers_own(tmp_path):
    """A resumed run's new saver takes over the epoch checkpoint it resumed from: removed after the next one."""
    old = tmp_path / "s_checkpoint_epoch=2.pt"
    old.write_bytes(b"from the interrupted run")
    engine = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(
        str(tmp_path), {"net": torch.nn.Linear(1, 1), "engine": engine}, save_interval=1, n_saved=1, file_prefix="s"
    )
    assert saver.saves_interval_checkpoints
    saver.adopt_interval_checkpoint(old, 2)
    saver.adopt_interval_checkpoint(old, 2)  # adopting twice counts it once
    saver.attach(engine)
    engine.load_state_dict({"iteration": 2, "epoch_length": 1, "max_epochs": 3})
    engine.run([0], max_epochs=3)
    assert sorted(os.listdir(tmp_path)) == ["s_checkpoint_epoch=3.pt"]
    with pytest.raises(ValueError, match="not in this saver's folder"):
        saver.adopt_interval_checkpoint(tmp_path / "sub" / "s_checkpoint_epoch=1.pt", 1)
    final_only = AtomicCheckpointSaver(str(tmp_path), {"net": torch.nn.Linear(1, 1)}, save_final=True)
    assert not final_only.saves_interval_checkpoints
    with pytest.raises(ValueError, match="save_interval=0"):
        final_only.adopt_interval_checkpoint(old, 2)
