from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from monai_car.handlers import AtomicCheckpointSaver, StrictCheckpointLoader
from monai_car.utils import (
    GEOMETRY_KEY,
    CheckpointGeometryError,
    CheckpointKeyError,
    TrainingGeometry,
    load_checkpoint,
    load_network_weights,
    save_checkpoint,
)

SETTINGS = {"spatial_dims": 2, "crop_size": 48, "g_channels": [4, 8], "hu_window": [-1000.0, 400.0]}


def _model_checkpoint(path, net, geometry=None):
    """The format of ``models/model.pt``: the network's state dict beside the geometry (or bare, as before)."""
    objects = {"model": net} if geometry is None else {"model": net, GEOMETRY_KEY: geometry}
    if geometry is None:
        torch.save(net.state_dict(), path)
    else:
        save_checkpoint(path, objects)
    return path


def test_settings_are_plain_and_compare_within_rounding():
    g = TrainingGeometry(SETTINGS, crop_size=np.int64(48), in_plane_spacing=None, window=(1, 2.5))
    state = g.state_dict()
    assert state["crop_size"] == 48 and type(state["crop_size"]) is int and state["window"] == [1, 2.5]
    g.check({**state, "hu_window": [-1000, 400], "window": [1.0, 2.5000000001]})  # same values: no error
    assert g.without("g_channels", "window").settings.keys() == {
        "spatial_dims",
        "crop_size",
        "hu_window",
        "in_plane_spacing",
    }
    with pytest.raises(TypeError, match="'net' must be a number"):
        TrainingGeometry(net=torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="at least one setting"):
        TrainingGeometry()


def test_mismatch_names_both_values_and_the_option():
    g = TrainingGeometry({**SETTINGS, "crop_size": 64, "g_channels": [8, 16]})
    with pytest.raises(CheckpointGeometryError) as excinfo:
        g.check(SETTINGS, "checkpoint 'model.pt'")
    message = str(excinfo.value)
    assert "checkpoint 'model.pt' was trained with other settings" in message
    assert "crop_size: trained with 48, this run has 64 (set --crop_size 48)" in message
    assert "g_channels: trained with [4, 8], this run has [8, 16]" in message
    assert '--crop_size 48 --g_channels "[4, 8]"' in message


def test_a_value_from_the_data_set_names_its_source_instead_of_an_option():
    g = TrainingGeometry({**SETTINGS, "hu_window": [-1200, 600]}, {"hu_window": "hu_window of /d/datalist.json"})
    with pytest.raises(
        CheckpointGeometryError, match=r"this run has \[-1200, 600\] \(hu_window of /d/datalist\.json\)"
    ):
        g.check(SETTINGS)


def test_old_checkpoints_and_unrecorded_settings_warn():
    g = TrainingGeometry(SETTINGS, in_plane_spacing=0.7)
    with pytest.warns(UserWarning, match="records no training geometry"):
        g.check(None)
    with pytest.warns(UserWarning, match=r"does not record \['in_plane_spacing'\]"):
        g.check(SETTINGS)


def test_load_network_weights_checks_the_geometry_before_loading(tmp_path):
    net = torch.nn.Linear(3, 2)
    path = _model_checkpoint(tmp_path / "model.pt", net, TrainingGeometry(SETTINGS))
    assert set(torch.load(path, weights_only=True)) == {"model", GEOMETRY_KEY}
    target = torch.nn.Linear(3, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_network_weights(path, target, geometry=SETTINGS)
    assert torch.equal(target.weight, net.weight)
    other = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointGeometryError, match="crop_size: trained with 48, this run has 32"):
        load_network_weights(path, other, geometry={**SETTINGS, "crop_size": 32})
    assert not torch.equal(other.weight, net.weight)  # nothing loaded
    load_network_weights(path, other)  # no geometry asked for: not checked
    # an old bare state dict loads with a warning
    old = _model_checkpoint(tmp_path / "old.pt", net)
    with pytest.warns(UserWarning, match="records no training geometry"):
        load_network_weights(old, torch.nn.Linear(3, 2), geometry=SETTINGS)
    # several networks beside a geometry: the entry must be named
    save_checkpoint(tmp_path / "two.pt", {"a": net, "b": net, GEOMETRY_KEY: TrainingGeometry(SETTINGS)})
    with pytest.raises(CheckpointKeyError, match=r"entries \['a', 'b'\] besides its geometry"):
        load_network_weights(tmp_path / "two.pt", torch.nn.Linear(3, 2))
    load_network_weights(tmp_path / "two.pt", torch.nn.Linear(3, 2), "b", geometry=SETTINGS)


def test_strict_load_checks_the_geometry_and_stays_strict(tmp_path):
    net, geometry = torch.nn.Linear(3, 2), TrainingGeometry(SETTINGS)
    path = save_checkpoint(tmp_path / "c.pt", {"net": net, GEOMETRY_KEY: geometry})
    target = torch.nn.Linear(3, 2)
    assert load_checkpoint(path, {"net": target, GEOMETRY_KEY: TrainingGeometry(SETTINGS)})["missing"] == []
    with pytest.raises(CheckpointGeometryError, match="crop_size"):
        load_checkpoint(path, {"net": torch.nn.Linear(3, 2), GEOMETRY_KEY: TrainingGeometry(SETTINGS, crop_size=9)})
    with pytest.raises(CheckpointKeyError, match=r"unexpected entries \['geometry'\]"):
        load_checkpoint(path, {"net": target})  # a geometry the loader does not expect is an unexpected entry
    old = save_checkpoint(tmp_path / "old.pt", {"net": net})
    with pytest.warns(UserWarning, match="records no training geometry"):
        assert load_checkpoint(old, {"net": target, GEOMETRY_KEY: geometry}) == {"missing": [], "unexpected": []}
    torch.save(net.state_dict(), tmp_path / "bare.pt")  # ignite's single-object format
    with pytest.warns(UserWarning, match="records no training geometry"):
        load_checkpoint(tmp_path / "bare.pt", {"model": target, GEOMETRY_KEY: geometry})


def test_the_best_model_saver_stores_the_geometry_and_the_resume_loader_checks_it(tmp_path):
    from ignite.engine import Engine

    net, geometry = torch.nn.Linear(3, 2), TrainingGeometry(SETTINGS)
    engine = Engine(lambda e, b: None)
    engine.state.metrics = {"ged": 0.5}
    saver = AtomicCheckpointSaver(
        str(tmp_path), {"model": net, GEOMETRY_KEY: geometry}, save_final=True, final_filename="model.pt"
    )
    saver.attach(engine)
    engine.run([0], max_epochs=1)
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved[GEOMETRY_KEY] == SETTINGS and set(saved["model"]) == {"weight", "bias"}
    trainer = Engine(lambda e, b: None)
    StrictCheckpointLoader(
        tmp_path / "model.pt", {"model": net, GEOMETRY_KEY: TrainingGeometry(SETTINGS, crop_size=9)}
    ).attach(trainer)
    with pytest.raises(CheckpointGeometryError, match="crop_size: trained with 48, this run has 9"):
        trainer.run([0], max_epochs=1)


def test_stage_settings_name_section_options_and_are_checked_when_a_checkpoint_loads(tmp_path):
    from monai_car.utils import SETTINGS_KEY, CheckpointSettingsError, StageSettings

    settings = StageSettings({"seed": 0}, sections={"stage2": {"lr_d": 1e-3, "generator_loss": "calibration"}})
    assert settings.state_dict() == {"seed": 0, "stage2#lr_d": 1e-3, "stage2#generator_loss": "calibration"}
    other = StageSettings({"seed": 0}, sections={"stage2": {"lr_d": 5e-4, "generator_loss": "calibration"}})
    with pytest.raises(CheckpointSettingsError) as excinfo:
        other.check(settings.state_dict(), "checkpoint 'refinement.pt'")
    assert isinstance(excinfo.value, CheckpointGeometryError)  # a checkpoint that does not fit this run
    assert "stage2#lr_d: trained with 0.001, this run has 0.0005 (set --stage2#lr_d 0.001)" in str(excinfo.value)
    with pytest.raises(ValueError, match="'stage2#lr_d' is given twice"):
        StageSettings({"stage2#lr_d": 1.0}, sections={"stage2": {"lr_d": 2.0}})
    with pytest.raises(TypeError, match="sections"):
        StageSettings({"seed": 0}, sections={"stage2": 1})
    with pytest.warns(UserWarning, match="records no stage settings"):
        settings.check(None)
    assert settings != TrainingGeometry(settings.settings) and settings == StageSettings(settings.settings)
    # a checkpoint entry checked by the strict loaders, like the geometry
    net = torch.nn.Linear(2, 1)
    path = save_checkpoint(tmp_path / "c.pt", {"net": net, SETTINGS_KEY: settings})
    load_checkpoint(path, {"net": torch.nn.Linear(2, 1), SETTINGS_KEY: settings})
    with pytest.raises(CheckpointSettingsError, match="stage2#lr_d"):
        load_checkpoint(path, {"net": torch.nn.Linear(2, 1), SETTINGS_KEY: other})
