"""StageResume: skip a finished stage, continue a stopped one from its latest epoch checkpoint, else train afresh."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from ignite.engine import Engine, Events

from monai_car.engines import FRESH, RESUME, SKIP, StageResume, file_digest
from monai_car.handlers import AtomicCheckpointSaver
from monai_car.utils import (
    GEOMETRY_KEY,
    SETTINGS_KEY,
    CheckpointGeometryError,
    CheckpointSettingsError,
    StageSettings,
    TrainingGeometry,
)

SETTINGS = {"seed": 0, "batch_size": 2}
SECTION = {"s": {"lr": 1e-3}}
GEOMETRY = {"crop_size": 32}
DATA = [0, 1, 2]  # 3 iterations per epoch


def _settings(lr: float = 1e-3) -> StageSettings:
    return StageSettings(SETTINGS, sections={"s": {"lr": lr}})


def _stage(ckpt, max_epochs: int, stop_after: int | None = None, plan: StageResume | None = None):
    """A stand-in stage: an engine whose process function changes a network by the iteration number, saving like
    the bundle's stages (``final.pt`` at the end, one ``s_checkpoint_epoch=N.pt``). Stops after ``stop_after`` epochs
    (``terminate``: the saver still writes ``final.pt``, at the iteration it stopped)."""
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)

    def step(engine, batch):
        with torch.no_grad():
            net.weight += engine.state.iteration * 0.01 + batch

    engine = Engine(step)
    save_dict = {"net": net, "trainer": engine, SETTINGS_KEY: _settings(), GEOMETRY_KEY: TrainingGeometry(GEOMETRY)}
    saver = AtomicCheckpointSaver(
        str(ckpt), save_dict, save_final=True, final_filename="final.pt", save_interval=1, epoch_level=True,
        n_saved=1, file_prefix="s",
    )  # fmt: skip
    saver.attach(engine)
    if stop_after is not None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda e: e.terminate())
    if plan is not None:
        plan.attach(engine, save_dict, saver)
        plan.run(_Trainer(engine, max_epochs))
        if plan.action == SKIP:
            return None
    else:
        engine.run(DATA, max_epochs=max_epochs)
    return net.weight.detach().clone()


def _plan(ckpt, max_epochs: int, resume=True, **kwargs) -> StageResume:
    defaults = {"settings": _settings(), "geometry": GEOMETRY, "fresh_hint": "Run without --resume."}
    return StageResume("s", resume, ckpt / "final.pt", max_epochs, **{**defaults, **kwargs})


class _Trainer:
    """A MONAI trainer stand-in: ``run()`` without arguments (runs ``engine`` on ``DATA`` when given one)."""

    def __init__(self, engine: Engine | None = None, max_epochs: int = 3):
        self.engine, self.max_epochs, self.runs = engine, max_epochs, 0

    def run(self):
        self.runs += 1
        if self.engine is not None:
            self.engine.run(DATA, max_epochs=self.max_epochs)


def test_without_resume_a_stage_trains_afresh_and_first_removes_its_earlier_checkpoints(tmp_path):
    names = [
        "final.pt",
        "s_checkpoint_epoch=3.pt",
        "s_checkpoint_epoch=4.pt",
        ".s_checkpoint_epoch=5.pt.tmp-0a1b2c3d",
        ".final.pt.tmp-0a1b2c3d",
        "t_checkpoint_epoch=1.pt",  # another stage's
        "model.pt",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"an earlier run's")
    plan = _plan(tmp_path, 3, resume=False)
    assert (plan.action, plan.load_path, plan.trains) == (FRESH, None, True)
    assert sorted(os.listdir(tmp_path)) == ["model.pt", "t_checkpoint_epoch=1.pt"]
    trainer = _Trainer()
    plan.attach(trainer, {"x": torch.nn.Linear(1, 1)})  # nothing to load
    plan.run(trainer)
    assert trainer.runs == 1
    assert _plan(tmp_path / "empty", 3, resume="true").action == FRESH  # nothing to resume from
    assert _plan(tmp_path, 3, resume="false").resume is False
    with pytest.raises(ValueError, match="resume must be true or false, got 'maybe'"):
        _plan(tmp_path, 3, resume="maybe")


def test_a_complete_stage_with_the_same_settings_is_skipped(tmp_path, caplog):
    _stage(tmp_path, 2)
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    assert sorted(before) == ["final.pt", "s_checkpoint_epoch=2.pt"]
    plan = _plan(tmp_path, 2)
    with caplog.at_level(logging.INFO):
        assert plan.action == SKIP and not plan.trains and plan.load_path is None
    assert "s is complete in" in caplog.text and "(2 of 2 epochs" in caplog.text
    trainer = _Trainer()
    plan.attach(trainer, {})
    plan.run(trainer)
    assert trainer.runs == 0
    assert {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)} == before


def test_a_killed_stage_continues_from_its_latest_epoch_checkpoint_to_the_uninterrupted_result(tmp_path):
    reference = _stage(tmp_path / "full", 3)
    _stage(tmp_path / "run", 3, stop_after=1)
    (tmp_path / "run" / "final.pt").unlink()  # kill -9 writes no final checkpoint
    (tmp_path / "run" / ".s_checkpoint_epoch=2.pt.tmp-0a1b2c3d").write_bytes(b"half")  # killed while saving
    plan = _plan(tmp_path / "run", 3)
    assert plan.action == RESUME and plan.load_path == tmp_path / "run" / "s_checkpoint_epoch=1.pt"
    assert sorted(os.listdir(tmp_path / "run")) == ["s_checkpoint_epoch=1.pt"]  # the half-written file is gone
    resumed = _stage(tmp_path / "run", 3, plan=plan)
    assert torch.equal(resumed, reference)
    # the adopted epoch checkpoint was replaced by the new ones, as the saver's own would have been
    assert sorted(os.listdir(tmp_path / "run")) == ["final.pt", "s_checkpoint_epoch=3.pt"]
    assert _plan(tmp_path / "run", 3).action == SKIP


def test_a_final_checkpoint_written_when_its_run_stopped_is_not_resumed_from(tmp_path, caplog):
    _stage(tmp_path, 3, stop_after=2)  # final.pt at iteration 6 of 9, like MONAI's saver after an exception
    with caplog.at_level(logging.WARNING):
        plan = _plan(tmp_path, 3)
        assert plan.action == RESUME and plan.load_path == tmp_path / "s_checkpoint_epoch=2.pt"
    assert "written when its run stopped at iteration 6 of 9" in caplog.text
    (tmp_path / "s_checkpoint_epoch=2.pt").unlink()
    assert _plan(tmp_path, 3).action == FRESH  # nothing else: afresh, and the stopped run's file is removed
    assert os.listdir(tmp_path) == []


def test_a_finished_stage_given_more_epochs_continues_from_its_final_checkpoint(tmp_path):
    two = _stage(tmp_path / "two", 2)
    reference = _stage(tmp_path / "three", 3)
    plan = _plan(tmp_path / "two", 3)
    assert plan.action == RESUME and plan.load_path == tmp_path / "two" / "final.pt"
    assert not torch.equal(two, reference)
    assert torch.equal(_stage(tmp_path / "two", 3, plan=plan), reference)


def test_a_checkpoint_of_other_settings_geometry_or_previous_stage_is_refused_naming_what_differs(tmp_path):
    _stage(tmp_path, 2)
    with pytest.raises(CheckpointSettingsError) as excinfo:
        _plan(tmp_path, 2, settings=_settings(lr=5e-4)).action  # noqa: B018
    message = str(excinfo.value)
    assert "s#lr: trained with 0.001, this run has 0.0005 (set --s#lr 0.001)" in message
    assert message.endswith("Run without --resume.")
    with pytest.raises(CheckpointGeometryError, match="crop_size: trained with 32, this run has 48"):
        _plan(tmp_path, 2, geometry={"crop_size": 48}).action  # noqa: B018
    with pytest.raises(ValueError, match=r"for 2 epochs, more than this run's s#max_epochs \(1\)"):
        _plan(tmp_path, 1).action  # noqa: B018
    # stage 2's checkpoints must hold the F of calibration.pt (stage 1 trained again since: refused)
    torch.save({"net": {"weight": torch.zeros(1, 2), "bias": torch.zeros(1)}}, tmp_path / "upstream.pt")
    with pytest.raises(CheckpointSettingsError, match=r"trained on another 'net' than .*upstream\.pt"):
        _plan(tmp_path, 2, upstream={"net": tmp_path / "upstream.pt"}).action  # noqa: B018
    with pytest.raises(Exception, match="has no entry 'other'"):
        _plan(tmp_path, 2, upstream={"other": tmp_path / "upstream.pt"}).action  # noqa: B018
    same = torch.load(tmp_path / "final.pt", weights_only=True)["net"]
    torch.save({"net": same}, tmp_path / "upstream.pt")
    assert _plan(tmp_path, 2, upstream={"net": tmp_path / "upstream.pt"}).action == SKIP
    assert sorted(os.listdir(tmp_path)) == ["final.pt", "s_checkpoint_epoch=2.pt", "upstream.pt"]  # none removed


def test_a_stage_follows_the_stage_before_it(tmp_path):
    _stage(tmp_path / "a", 2)
    _stage(tmp_path / "b", 2)
    upstream = StageResume("u", False, tmp_path / "u" / "final.pt", 1, SETTINGS)
    downstream = _plan(tmp_path / "a", 2)
    downstream.follow(upstream)  # the previous stage trains: this one afresh, whatever resume says
    assert upstream.action == FRESH and downstream.action == FRESH
    assert os.listdir(tmp_path / "a") == []
    _stage(tmp_path / "u", 1)
    skipped = StageResume("u", True, tmp_path / "u" / "final.pt", 1, {"seed": 0})
    with pytest.raises(CheckpointSettingsError, match="s#lr"):  # decided at once: refused before training
        _plan(tmp_path / "b", 2, settings=_settings(lr=1.0)).follow(skipped)
    later = _plan(tmp_path / "b", 2)
    later.follow(skipped)
    assert skipped.action == SKIP and later.action == SKIP
    with pytest.raises(RuntimeError, match="already decided"):
        later.follow(skipped)


def test_file_digest(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    assert file_digest(tmp_path / "a.json") == "44136fa355b3678a"  # sha256 of "{}"
    assert len(file_digest(tmp_path / "a.json", 64)) == 64
    with pytest.raises(FileNotFoundError, match="does not exist"):
        file_digest(tmp_path / "b.json")
