"""Bundle run-time support: override checks, the error hook, output folders, the trainer alias."""

from __future__ import annotations

import io
import json
import sys

import pytest

from monai_car.utils.bundle import (
    OutputPathError,
    UnknownOverrideError,
    bundle_trainer,
    check_output_dirs,
    check_overrides,
    config_ids,
    find_run_arguments,
    install_error_hook,
    prepare_bundle_run,
    root_cause,
)


@pytest.fixture
def configs(tmp_path):
    base = {
        "seed": 0,
        "alias": "@seed",
        "stage2": {"num_samples": 8, "val_num_samples": 16, "handlers": [{"_target_": "StatsHandler"}]},
    }
    overlay = {"stage2#handlers#0#_disabled_": True, "extra_key": 1}
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "overlay.json").write_text(json.dumps(overlay))
    return tmp_path / "base.json", tmp_path / "overlay.json"


def test_config_ids_lists_nested_keys_and_list_indices():
    ids = config_ids({"a": 1, "b": {"c": [10, {"d": 2}]}})
    assert ids == ["a", "b", "b#c", "b#c#0", "b#c#1", "b#c#1#d"]
    assert config_ids(3) == []


def test_known_keys_pass_in_both_separators(configs):
    base, overlay = configs
    check_overrides({"seed": 1, "stage2#num_samples": 2, "stage2::val_num_samples": 3}, str(base))
    check_overrides({"stage2#handlers#0#_target_": "X", "stage2#handlers#-1": {}}, str(base))
    check_overrides({"extra_key": 2}, [str(base), str(overlay)])  # a key of the second file
    check_overrides({"stage2#handlers#0#_disabled_": True}, str(base))  # MONAI's special keys on a component
    check_overrides({"_meta_#version": "1"}, str(base))
    check_overrides({"tracking_uri": "x"}, str(base), extra_keys=["tracking_uri"])
    check_overrides({}, str(base))


def test_a_misspelt_key_names_the_closest_valid_keys(configs):
    base, _ = configs
    with pytest.raises(UnknownOverrideError) as excinfo:
        check_overrides({"stage2#num_sampels": 2, "seed": 1}, str(base))
    message = str(excinfo.value)
    assert "--stage2#num_sampels: did you mean --stage2#num_samples" in message and "base.json" in message
    assert "--alias" not in message  # a plain reference is an alias, not a setting to suggest
    with pytest.raises(UnknownOverrideError, match="--zzzz: no similar key"):
        check_overrides({"zzzz": 1}, str(base))
    with pytest.raises(UnknownOverrideError, match="stage2#handlers#3"):
        check_overrides({"stage2#handlers#3": {}}, str(base))  # past the end of the list
    with pytest.raises(UnknownOverrideError, match="seed#_disabled_"):
        check_overrides({"seed#_disabled_": True}, str(base))  # a special key on a value, not a component
    with pytest.raises(TypeError, match="mapping"):
        check_overrides(["seed"], str(base))


def _fake_run(**kwargs):
    """A function named ``run`` in a module named ``monai.bundle.scripts``, as ``monai.bundle run`` is."""
    namespace = {"__name__": "monai.bundle.scripts", "find": find_run_arguments}
    exec(
        "def run(run_id=None, config_file=None, tracking=None, args_file=None, **override):\n    return find()\n",
        namespace,
    )
    return namespace["run"](**kwargs)


def test_find_run_arguments_reads_the_running_monai_bundle_run(tmp_path):
    assert find_run_arguments() is None  # no monai.bundle run on the stack
    found = _fake_run(run_id="training", config_file="a.json", seed=3)
    assert found == {"config_file": "a.json", "overrides": {"seed": 3}, "tracking": None}
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"config_file": "b.json", "run_id": "x", "seed": 1, "batch_size": 2}))
    found = _fake_run(args_file=str(args), seed=5)
    assert found["config_file"] == "b.json" and found["overrides"] == {"seed": 5, "batch_size": 2}


def test_prepare_bundle_run_checks_the_overrides_of_the_run(configs, tmp_path):
    base, _ = configs
    prepare_bundle_run({"output_dir": str(tmp_path / "out")})  # outside monai.bundle run: nothing to check
    namespace = {"__name__": "monai.bundle.scripts", "prepare": prepare_bundle_run}
    exec("def run(config_file=None, tracking=None, args_file=None, **override):\n    prepare()\n", namespace)
    with pytest.raises(UnknownOverrideError, match="stage2#num_sampels"):
        namespace["run"](config_file=str(base), **{"stage2#num_sampels": 2})
    namespace["run"](config_file=str(base), **{"stage2#num_samples": 2})
    namespace["run"](config_file=str(base), tracking="mlflow", tracking_uri="file:///x")  # MONAI's tracking keys
    assert not (tmp_path / "out").exists()


def test_root_cause_skips_monai_wrappers_only():
    try:
        try:
            try:
                raise FileNotFoundError("dataset_dir /x does not exist")
            except FileNotFoundError as e:
                raise RuntimeError("Failed to evaluate ConfigExpression: $f()") from e
        except RuntimeError as e:
            raise RuntimeError("applying transform <X>") from e
    except RuntimeError as e:
        outer = e
    assert isinstance(root_cause(outer), FileNotFoundError)
    own = RuntimeError("a project message")
    assert root_cause(own) is own
    plain = ValueError("x")
    assert root_cause(plain) is plain


def test_error_hook_prints_the_cause_last(monkeypatch):
    printed = []
    monkeypatch.setattr(sys, "excepthook", lambda *args: printed.append(args[1]))
    assert install_error_hook() is False  # not a `python -m monai.bundle` process
    assert install_error_hook(force=True) and install_error_hook()  # once
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    cause = FileNotFoundError("dataset_dir /x does not exist")
    wrapper = RuntimeError("Failed to evaluate ConfigExpression: $f()")
    wrapper.__cause__ = cause
    sys.excepthook(RuntimeError, wrapper, None)
    assert printed == [wrapper]  # the usual traceback first
    assert stderr.getvalue().splitlines()[-1] == "FileNotFoundError: dataset_dir /x does not exist"
    sys.excepthook(ValueError, ValueError("own"), None)
    assert stderr.getvalue().count("\n") == 2  # nothing added to a non-wrapped error


def test_check_output_dirs_names_the_folder_and_the_option(tmp_path):
    check_output_dirs({"output_dir": str(tmp_path / "a" / "b"), "eval_dir": None})
    assert not (tmp_path / "a").exists()  # checked, not created
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match=r"--output_dir .*file/x cannot be created: .*file is a file"):
        check_output_dirs({"output_dir": str(tmp_path / "file" / "x")})
    with pytest.raises(OutputPathError, match=r"--eval_dir .*file is a file; give a writable folder"):
        check_output_dirs({"eval_dir": tmp_path / "file"})
    with pytest.raises(TypeError, match="output_dir must be a folder path"):
        check_output_dirs({"output_dir": 3})
    with pytest.raises(TypeError, match="map option names"):
        check_output_dirs([str(tmp_path)])


def test_check_output_dirs_reports_an_unwritable_folder(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(OutputPathError, match=r"--output_dir .* cannot be created in .*Permission denied.*writable"):
        check_output_dirs({"output_dir": str(tmp_path / "new")})


def test_bundle_trainer_sets_the_epochs():
    class State:
        max_epochs = 16

    class Trainer:
        state = State()

    trainer = Trainer()
    assert bundle_trainer(trainer, 3) is trainer and trainer.state.max_epochs == 3
    with pytest.raises(ValueError, match="max_epochs must be a positive int"):
        bundle_trainer(trainer, 0)
    with pytest.raises(TypeError, match="ignite engine"):
        bundle_trainer(object(), 2)
