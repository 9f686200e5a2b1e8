"""The LIDC bundle against MONAI's conventions: official metadata schema, bundle properties, checked overrides,
readable errors (the project's message last, files and folders named), the one-image inference path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tomllib
import torch
from bundle_fixtures import BUNDLE, CONFIGS, TINY, cli_overrides, make_tiny_dataset
from monai.bundle import ConfigParser, ConfigWorkflow, run
from packaging.requirements import Requirement

import monai_car
from monai_car.utils.bundle import OutputPathError, UnknownOverrideError, root_cause

REPO = BUNDLE.parents[1]
OFFICIAL_SCHEMA = REPO.parent / "shared" / "data" / "monai_bundle_schema" / "meta_schema_20240725.json"
META = CONFIGS / "metadata.json"
TRAIN = str(CONFIGS / "train.json")
EVALUATE = [TRAIN, str(CONFIGS / "evaluate.json")]
INFERENCE = str(CONFIGS / "inference.json")
NETWORK = {k: TINY[k] for k in ("crop_size", "f_channels", "f_convs_per_block", "g_channels", "noise_dim")}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("conformity") / "data")


def _official_schema() -> Path:
    if not OFFICIAL_SCHEMA.is_file():
        pytest.skip(f"MONAI's official metadata schema is not at {OFFICIAL_SCHEMA} (../shared is absent here)")
    return OFFICIAL_SCHEMA


def test_metadata_passes_monais_official_schema(tmp_path):
    from monai.bundle import verify_metadata

    schema = _official_schema()
    verify_metadata(meta_file=str(META), filepath=str(schema))  # an existing file is not downloaded
    for required in ("required_packages_version", "network_data_format"):
        bad = json.loads(META.read_text())
        del bad[required]
        (tmp_path / "metadata.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=required):
            verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(schema))
    assert not (BUNDLE.parent / "schema" / schema.name).exists()  # no hand-written copy of it in the project


def test_metadata_versions_are_the_projects():
    meta = json.loads(META.read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}
    monai_extras = {"pytorch-ignite", "fire", "jsonschema", "pyyaml"}  # monai[fire,ignite,pyyaml,jsonschema]
    for name, key in (("monai", "monai_version"), ("torch", "pytorch_version"), ("numpy", "numpy_version")):
        assert requirements[name].specifier.contains(meta[key], prereleases=True), (name, meta[key])
    packages = meta["required_packages_version"]
    assert packages["monai-car"] == monai_car.__version__
    for name, pinned in packages.items():
        if name == "monai-car":
            continue
        assert name in requirements or name in monai_extras, f"{name} is not a dependency of the project"
        if name in requirements:
            assert requirements[name].specifier.contains(pinned), (name, pinned, str(requirements[name].specifier))
    assert set(requirements) - {"torch", "numpy", "monai", "setuptools"} <= set(packages)


def _workflow(config_file, workflow_type: str, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=config_file,
        meta_file=str(META),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )
    workflow.initialize()
    return workflow


def test_training_properties_are_complete(data, tmp_path):
    workflow = _workflow(TRAIN, "train", dataset_dir=str(data), output_dir=str(tmp_path / "o"), **TINY)
    assert workflow.check_properties() == []
    assert type(workflow.trainer).__name__ == "RefinementTrainer" and workflow.max_epochs == 1  # stage 2's
    assert workflow.train_dataset is workflow.parser.get_parsed_content("train_dataset")
    assert workflow.network_def.__class__.__name__ == "CARNet" and workflow.dataset_dir == str(data)
    workflow.max_epochs = 3  # set through the property: the trainer it gives runs 3 epochs
    workflow.initialize()
    assert workflow.trainer.state.max_epochs == 3


@pytest.mark.parametrize("config_file", [INFERENCE, EVALUATE], ids=["inference", "train+evaluate"])
def test_inference_properties_are_complete(data, tmp_path, config_file):
    overrides = NETWORK if config_file == INFERENCE else TINY
    workflow = _workflow(config_file, "infer", dataset_dir=str(data), output_dir=str(tmp_path / "o"), **overrides)
    assert workflow.check_properties() == []
    assert type(workflow.inferer).__name__ == "CARSamplingInferer" and len(workflow.dataset) == 2
    if config_file == INFERENCE:  # the one-image path MONAI Label runs: preprocessing, inferer, postprocessing
        image = workflow.preprocessing({"image": str(data / "images" / "test_00.nii.gz")})["image"]
        assert tuple(image.shape) == (1, 32, 32)
        assert type(workflow.evaluator).__name__ == "SupervisedEvaluator"


def test_inferring_crops_writes_one_label_map_per_crop(data, tmp_path):
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update(NETWORK)
    net = parser.get_parsed_content("network_def")
    geometry = parser.get_parsed_content("training_geometry").state_dict()
    (tmp_path / "models").mkdir()
    torch.save({"model": net.state_dict(), "geometry": geometry}, tmp_path / "models" / "model.pt")
    run("inferring_crops", config_file=INFERENCE, dataset_dir=str(data), output_dir=str(tmp_path), **NETWORK)
    written = sorted(p.name for p in (tmp_path / "crop_inference").iterdir())
    assert written == ["test_00_seg.nii.gz", "test_01_seg.nii.gz"]
    label = nib.load(str(tmp_path / "crop_inference" / "test_00_seg.nii.gz"))
    image = nib.load(str(data / "images" / "test_00.nii.gz"))
    assert label.shape == image.shape and set(np.unique(np.asarray(label.dataobj))) <= {0, 1}
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-5)


def test_a_misspelt_override_stops_the_run_before_anything_is_built(data, tmp_path):
    overrides = {**TINY, "dataset_dir": str(data), "output_dir": str(tmp_path / "o"), "stage2#num_sampels": 2}
    with pytest.raises(Exception) as excinfo:
        run("training", config_file=TRAIN, **overrides)
    error = root_cause(excinfo.value)
    assert isinstance(error, UnknownOverrideError)
    assert "--stage2#num_sampels: did you mean --stage2#num_samples" in str(error)
    assert not (tmp_path / "o").exists()
    with pytest.raises(Exception) as excinfo:
        run("evaluating", config_file=EVALUATE, **{**overrides, "stage2#num_sampels": 2, "eval_num_sample": 3})
    assert "--eval_num_sample: did you mean --eval_num_samples" in str(root_cause(excinfo.value))


def test_an_output_folder_under_a_file_is_named_with_its_option(data, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    overrides = {**TINY, "dataset_dir": str(data), "output_dir": str(tmp_path / "file" / "run")}
    with pytest.raises(Exception) as excinfo:
        run("train_calibration", config_file=TRAIN, **overrides)
    error = root_cause(excinfo.value)
    assert isinstance(error, OutputPathError) and "--output_dir" in str(error) and "is a file" in str(error)


def _last_line(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    return [line for line in proc.stderr.splitlines() if line.strip()][-1]


def test_the_last_line_of_a_failed_cli_run_is_the_projects_message(data, tmp_path):
    missing = tmp_path / "nowhere"
    args = ["train_calibration", "--config_file", TRAIN, "--output_dir", str(tmp_path / "o")]
    last = _last_line([*args, "--dataset_dir", str(missing), *cli_overrides(TINY)], tmp_path)
    assert last.startswith("FileNotFoundError: dataset_dir") and str(missing) in last
    last = _last_line([*args, "--dataset_dir", str(data), "--stage1#max_epoch", "2"], tmp_path)
    assert last.startswith("  --stage1#max_epoch: did you mean --stage1#max_epochs,")


def test_docs_say_what_is_reproducible_and_nothing_points_at_a_hand_written_schema():
    docs = (BUNDLE / "docs" / "README.md").read_text()
    assert "bit for bit" in docs and "thread count" in docs and "a few 1e-2" in docs
    assert "repeat to the last digit" not in docs
    for path in (REPO / "README.md", BUNDLE / "docs" / "README.md", *REPO.glob("tests/**/*.py")):
        if path.name != Path(__file__).name:
            assert "bundles/schema" not in path.read_text(), path
