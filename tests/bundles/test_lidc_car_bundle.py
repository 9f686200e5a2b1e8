"""The LIDC bundle: configs, training through ``monai.bundle run``, evaluation, resume, volume inference, bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_fixtures import CONFIGS, TINY, cli_overrides, make_tiny_dataset, run_bundle_training, save_nifti
from monai.bundle import ConfigParser, run

from monai_car.networks import CARNet
from monai_car.utils import CheckpointGeometryError, has_native_bf16

TRAIN = str(CONFIGS / "train.json")
EVALUATE = [TRAIN, str(CONFIGS / "evaluate.json")]
INFERENCE = str(CONFIGS / "inference.json")
NETWORK_KEYS = ("f_channels", "f_convs_per_block", "g_channels", "noise_dim", "crop_size")


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One tiny two-stage training run through the CLI, from an unrelated working folder."""
    root = tmp_path_factory.mktemp("bundle")
    data = make_tiny_dataset(root / "data")
    out = root / "out"
    overrides = {**TINY, "dataset_dir": str(data), "output_dir": str(out)}
    proc = run_bundle_training(TRAIN, overrides, root)
    return {"data": data, "out": out, "overrides": overrides, "root": root, "log": proc.stdout + proc.stderr}


def test_configs_parse_and_instantiate():
    parser = ConfigParser()
    parser.read_config(TRAIN)
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, CARNet) and net.num_classes == 2
    x = torch.rand(2, 1, 64, 64)
    assert net(x).shape == (2, 2, 64, 64)
    assert net.sample(x, 3).shape == (2, 3, 2, 64, 64)
    disc = parser.get_parsed_content("discriminator_def")
    assert disc(torch.rand(2, 3, 64, 64)).shape[0] == 2
    # inference must build the very network that training saves
    infer = ConfigParser()
    infer.read_config(INFERENCE)
    for key in (*NETWORK_KEYS, "spatial_dims", "num_classes"):
        assert infer[key] == parser[key], key
    for key in ("calibration_net", "refinement_net", "network_def"):
        assert infer[key] == parser[key], key
    for extra in ("evaluate.json", "multi_gpu_train.json"):
        merged = ConfigParser()
        merged.read_config([TRAIN, str(CONFIGS / extra)])
        assert "training" in merged and merged["network_def"] == parser["network_def"]


def test_network_matches_the_metadata():
    from monai.bundle import verify_net_in_out

    # the metadata's schema conformity: tests/bundles/test_bundle_conformity.py (MONAI's official schema)
    verify_net_in_out(
        net_id="network_def", meta_file=str(CONFIGS / "metadata.json"), config_file=TRAIN, n=2, device="cpu"
    )


def test_training_writes_checkpoints_logs_and_selects_a_model(trained):
    models = trained["out"] / "models"
    names = (
        "calibration.pt",
        "refinement.pt",
        "model.pt",
        "stage1_checkpoint_epoch=1.pt",
        "stage2_checkpoint_epoch=1.pt",
    )
    assert sorted(p.name for p in models.iterdir()) == sorted(names)  # each stage's latest epoch checkpoint, too
    for stage in ("stage1", "stage2"):
        assert list((trained["out"] / "logs" / stage).glob("events.out.tfevents.*")), stage
    stage2 = torch.load(models / "refinement.pt", weights_only=True)
    assert {"calibration_net", "refinement_net", "discriminator", "optimizer_g", "optimizer_d"} <= set(stage2)
    assert {"discriminator_schedule", "trainer", "lr_scheduler_g", "lr_scheduler_d"} <= set(stage2)
    assert stage2["trainer"]["iteration"] == 3  # 6 cases, batch 2, one epoch
    # stage 2 froze F: its weights equal the stage-1 checkpoint's
    stage1 = torch.load(models / "calibration.pt", weights_only=True)
    for key, value in stage1["calibration_net"].items():
        assert torch.equal(value, stage2["calibration_net"][key]), key
    saved = torch.load(models / "model.pt", weights_only=True)  # the CARNet state dict beside the training geometry
    assert set(saved) == {"model", "geometry"}
    model = saved["model"]
    assert any(k.startswith("refinement_net.") for k in model) and any(k.startswith("calibration_net.") for k in model)
    geometry = {"spatial_dims": 2, "num_classes": 2, **{k: TINY[k] for k in NETWORK_KEYS}}
    assert saved["geometry"] == geometry  # the tiny data set states no hu_window / in_plane_spacing
    assert stage2["geometry"] == geometry
    assert stage1["geometry"] == {k: v for k, v in geometry.items() if k not in ("noise_dim", "g_channels")}
    # the settings a resume must repeat (not the epochs: a stage may be trained further)
    assert stage1["settings"]["stage1#lr"] == 1e-3 and "stage1#max_epochs" not in stage1["settings"]
    assert {"seed", "batch_size", "datalist", "stage2#lr_d", "stage2#r1_weight", "stage2#generator_loss"} <= set(
        stage2["settings"]
    )
    assert stage2["settings"]["stage2#num_samples"] == TINY["stage2#num_samples"]


def test_a_log_file_gets_progress_lines_not_carriage_returns(trained):
    assert "\r" not in trained["log"]  # the CLI's output was captured: not a terminal
    for engine in ("CalibrationTrainer", "RefinementTrainer"):
        assert f"{engine} epoch [1/1]: [3/3] 100%, loss=" in trained["log"], engine


def test_evaluation_writes_metrics_report_pictures_and_sample_sets(trained):
    out = trained["out"]
    overrides = {**trained["overrides"], "eval_num_samples": 16, "eval_dir": str(out / "eval")}
    run("evaluating", config_file=EVALUATE, **overrides)
    summary = json.loads((out / "eval" / "metrics.json").read_text())
    metrics = summary["metrics"]
    assert {"ged", "ged_16", "hm_iou", "hm_iou_16", "ece", "ece_calibration"} <= set(metrics)
    assert metrics["ged"] == pytest.approx(metrics["ged_16"])  # all 16 samples
    assert 0.0 <= metrics["hm_iou_16"] <= 1.0 and 0.0 <= metrics["ece"] <= 1.0
    assert summary["num_cases"] == 2 and summary["num_samples"] == 16
    table = summary["reliability_tables"]["ece"]
    assert sum(table["count"]) == 2 * 32 * 32  # every pixel of both cases pooled once (soft target: grader mean)
    for name in ("report.md", "reliability.png", "reliability_calibration.png"):
        assert (out / "eval" / name).is_file(), name
    report = (out / "eval" / "report.md").read_text()
    assert "hm_iou_16" in report and "![" in report
    # the fidelity report of the hard samples, from the first min(64, S) samples
    fidelity = {"sample_sharpness", "presence_ece", "presence_ece_floor", "hard_pixel_ece", "f_fit"}
    assert fidelity <= set(metrics) and metrics["fidelity_cases"] == 2
    assert "Fidelity of the hard samples" in report and "lesion-presence ECE" in report
    assert len(summary["reliability_tables"]["presence"]["count"]) == 5
    assert sum(summary["reliability_tables"]["presence"]["count"]) == 2  # one entry per case
    assert (out / "eval" / "reliability_presence.png").is_file()
    cases = sorted((out / "eval" / "sample_sets").iterdir())
    assert len(cases) == 2
    image = nib.load(str(trained["data"] / "images" / "test_00.nii.gz"))
    samples = nib.load(str(cases[0] / "samples.nii.gz"))
    np.testing.assert_allclose(samples.affine, image.affine, atol=1e-4)  # overlays on the input in Slicer
    assert samples.shape[:2] == (32, 32)


def test_resume_continues_from_the_checkpoint(trained, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trained["out"] / "models", out / "models")
    overrides = {**trained["overrides"], "output_dir": str(out), "stage2#resume": True, "stage2#max_epochs": 2}
    run("train_refinement", config_file=TRAIN, **overrides)
    state = torch.load(out / "models" / "refinement.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 6  # 3 iterations of epoch 1 loaded, epoch 2 trained on top


def _model_files(models) -> dict:
    return {p.name: p.read_bytes() for p in sorted(models.iterdir())}


def test_resuming_a_finished_training_skips_both_stages(trained, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(trained["out"] / "models", out / "models")
    before = _model_files(out / "models")
    run("training", config_file=TRAIN, **{**trained["overrides"], "output_dir": str(out), "resume": True})
    log = "".join(capsys.readouterr())  # the bundle's logging.conf logs to stdout
    assert "stage1 is complete in" in log and "stage2 is complete in" in log
    assert "Engine run" not in log  # nothing trained
    assert _model_files(out / "models") == before


def test_a_resume_with_other_settings_is_refused_before_anything_trains(trained, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trained["out"] / "models", out / "models")
    before = _model_files(out / "models")
    overrides = {**trained["overrides"], "output_dir": str(out), "resume": True, "stage2#lr_d": 0.0005}
    with pytest.raises(Exception) as excinfo:
        run("training", config_file=TRAIN, **overrides)
    message = _messages(excinfo)
    assert "CheckpointSettingsError" in message and "refinement.pt' was trained with other settings" in message
    assert "stage2#lr_d: trained with 0.001, this run has 0.0005 (set --stage2#lr_d 0.001)" in message
    assert "run train_refinement without --resume" in message
    with pytest.raises(Exception) as excinfo:
        run("training", config_file=TRAIN, **{**overrides, "stage2#lr_d": 0.001, "stage1#lr": 0.01})
    assert "stage1#lr: trained with 0.001, this run has 0.01" in _messages(excinfo)
    assert _model_files(out / "models") == before


@pytest.mark.parametrize(
    "option, value, error",
    [
        ("stage2#generator_loss", "l2", "generator_loss must be one of"),
        ("stage2#calibration_estimator", "exact", "estimator must be one of"),
        ("resume", "maybe", "resume must be true or false, got 'maybe'"),
    ],
)
def test_a_bad_stage_2_option_stops_training_before_stage_1_trains(tmp_path, option, value, error):
    data = make_tiny_dataset(tmp_path / "data", {"training": 2, "validation": 1, "test": 1})
    overrides = {**TINY, "dataset_dir": str(data), "output_dir": str(tmp_path / "o"), option: value}
    with pytest.raises(Exception) as excinfo:
        run("training", config_file=TRAIN, **overrides)
    assert error in _messages(excinfo)
    assert not (tmp_path / "o" / "models").exists()


def test_inference_over_a_volume_writes_world_aligned_sample_sets(trained, tmp_path):
    affine = np.array([[-0.8, 0, 0, 30.0], [0, -0.8, 0, 40.0], [0, 0, 2.0, -50.0], [0, 0, 0, 1]])
    vol = np.full((48, 44, 10), -900.0, dtype=np.float32)
    ii, jj, kk = np.mgrid[:48, :44, :10]
    centre = np.array([20, 25, 5])
    vol[(ii - centre[0]) ** 2 + (jj - centre[1]) ** 2 + (2.5 * (kk - centre[2])) ** 2 <= 36] = 40.0
    save_nifti(tmp_path / "in" / "study_a.nii.gz", vol, affine)
    ras = (affine @ np.array([*centre, 1.0]))[:3]
    lps = ras * np.array([-1, -1, 1])
    with open(tmp_path / "in" / "lesions.csv", "w", newline="") as f:
        csv.writer(f).writerows([["lesion_id", "x", "y", "z", "study"], ["n1", *lps, "study_a"]])
    overrides = {k: v for k, v in trained["overrides"].items() if k in NETWORK_KEYS}
    overrides.update(output_dir=str(trained["out"]), inference_dir=str(tmp_path / "res"))
    overrides.update(input_dir=str(tmp_path / "in"))
    run("inferring", config_file=INFERENCE, num_samples=5, **overrides)
    lesion = tmp_path / "res" / "study_a" / "n1"
    samples = nib.load(str(lesion / "samples.nii.gz"))
    assert samples.shape[:2] == (32, 32)
    # the slab's centre voxel is the lesion centre in world coordinates
    c = (np.array(samples.shape[:3]) - 1) / 2.0
    world = samples.affine @ np.array([*np.floor(c[:2] + 0.5), centre[2] - _z0(samples, affine), 1.0])
    np.testing.assert_allclose(world[:3], ras, atol=0.81)
    full = nib.load(str(tmp_path / "res" / "study_a" / "mean_foreground_full.nii.gz"))
    assert full.shape == vol.shape
    np.testing.assert_allclose(full.affine, affine, atol=1e-5)
    rows = list(csv.DictReader(open(tmp_path / "res" / "study_a" / "summary.csv")))
    assert [r["lesion_id"] for r in rows] == ["n1"] and int(rows[0]["num_samples"]) == 5
    assert float(rows[0]["sample_volume_std_mm3"]) >= 0.0 and float(rows[0]["mean_entropy_nats"]) >= 0.0


def _messages(excinfo: pytest.ExceptionInfo) -> str:
    """The messages of the raised exception and its causes (MONAI wraps errors raised inside config expressions)."""
    out, e = [], excinfo.value
    while e is not None:
        out.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return "\n".join(out)


def _z0(samples: nib.Nifti1Image, affine: np.ndarray) -> int:
    """The CT slice index of the slab's first slice (slab z axis is the CT's)."""
    first = np.linalg.inv(affine) @ samples.affine @ np.array([0, 0, 0, 1.0])
    return int(round(first[2]))


def test_missing_dataset_dir_names_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(Exception) as excinfo:
        run("train_calibration", config_file=TRAIN, dataset_dir=str(missing), output_dir=str(tmp_path / "o"), **TINY)
    assert "FileNotFoundError" in _messages(excinfo) and str(missing) in _messages(excinfo)


def test_missing_datalist_file_names_the_entry(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", {"training": 2, "validation": 1, "test": 1})
    (data / "labels" / "training_01_g2.nii.gz").unlink()
    with pytest.raises(Exception) as excinfo:
        run("train_calibration", config_file=TRAIN, dataset_dir=str(data), output_dir=str(tmp_path / "o"), **TINY)
    assert "training[1]" in _messages(excinfo) and "training_01_g2.nii.gz" in _messages(excinfo)


def test_image_and_mask_shapes_must_agree(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", {"training": 2, "validation": 1, "test": 1})
    save_nifti(data / "labels" / "training_00_g1.nii.gz", np.zeros((30, 32), np.uint8), np.eye(4))
    with pytest.raises(Exception) as excinfo:
        run("train_calibration", config_file=TRAIN, dataset_dir=str(data), output_dir=str(tmp_path / "o"), **TINY)
    assert "training_00" in _messages(excinfo) and "(30, 32)" in _messages(excinfo)
    assert not (tmp_path / "o" / "models" / "calibration.pt").exists()


def test_checkpoint_of_another_network_configuration_is_refused(trained, tmp_path):
    overrides = {**trained["overrides"], "g_channels": [8, 16, 32], "eval_dir": str(tmp_path / "eval")}
    with pytest.raises(Exception) as excinfo:
        run("evaluating", config_file=EVALUATE, **overrides)
    assert CheckpointGeometryError.__name__ in _messages(excinfo)
    assert 'g_channels: trained with [4, 8, 16], this run has [8, 16, 32] (set --g_channels "[4, 8, 16]")' in (
        _messages(excinfo)
    )
    assert not (tmp_path / "eval").exists()


def test_another_crop_size_is_refused_at_evaluation_and_inference(trained, tmp_path):
    overrides = {**trained["overrides"], "crop_size": 24, "eval_dir": str(tmp_path / "eval")}
    with pytest.raises(Exception) as excinfo:
        run("evaluating", config_file=EVALUATE, **overrides)
    assert "crop_size: trained with 32, this run has 24 (set --crop_size 32)" in _messages(excinfo)
    assert not (tmp_path / "eval").exists()
    overrides = {k: v for k, v in trained["overrides"].items() if k in NETWORK_KEYS}
    overrides.update(crop_size=24, output_dir=str(trained["out"]), inference_dir=str(tmp_path / "res"))
    with pytest.raises(Exception) as excinfo:
        run("inferring", config_file=INFERENCE, **overrides)
    assert CheckpointGeometryError.__name__ in _messages(excinfo) and "--crop_size 32" in _messages(excinfo)
    assert not (tmp_path / "res").exists()


def test_a_checkpoint_without_geometry_loads_with_a_warning(trained, tmp_path):
    old = tmp_path / "old_model.pt"
    torch.save(torch.load(trained["out"] / "models" / "model.pt", weights_only=True)["model"], old)  # the old format
    overrides = {**trained["overrides"], "ckpt_path": str(old), "eval_num_samples": 3, "eval_dir": str(tmp_path / "e")}
    with pytest.warns(UserWarning, match="records no training geometry"):
        run("evaluating", config_file=EVALUATE, **overrides)
    assert (tmp_path / "e" / "metrics.json").is_file()


def test_an_empty_split_is_refused_before_anything_is_written(trained, tmp_path):
    data = make_tiny_dataset(tmp_path / "data", {"training": 2, "validation": 0, "test": 0})
    out = tmp_path / "o"
    with pytest.raises(Exception) as excinfo:  # before stage 1 trains: no calibration.pt
        run("training", config_file=TRAIN, **{**TINY, "dataset_dir": str(data), "output_dir": str(out)})
    assert f"{data / 'datalist.json'}: split 'validation' is empty" in _messages(excinfo)
    assert not (out / "models").exists()
    overrides = {**trained["overrides"], "dataset_dir": str(data), "eval_dir": str(tmp_path / "eval")}
    with pytest.raises(Exception) as excinfo:
        run("evaluating", config_file=EVALUATE, **overrides)
    assert f"{data / 'datalist.json'}: split 'test' is empty" in _messages(excinfo)
    assert not (tmp_path / "eval").exists()


def test_a_stage_2_shorter_than_val_interval_is_refused_before_training(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", {"training": 2, "validation": 1, "test": 1})
    overrides = {**TINY, "dataset_dir": str(data), "output_dir": str(tmp_path / "o"), "stage2#val_interval": 2}
    for entry in ("training", "train_refinement"):
        with pytest.raises(Exception) as excinfo:
            run(entry, config_file=TRAIN, **overrides)
        assert "stage2#max_epochs (1) is shorter than stage2#val_interval (2)" in _messages(excinfo)
        assert not (tmp_path / "o" / "models").exists()


def test_refinement_alone_needs_the_calibration_checkpoint(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", {"training": 2, "validation": 1, "test": 1})
    with pytest.raises(Exception) as excinfo:
        run("train_refinement", config_file=TRAIN, dataset_dir=str(data), output_dir=str(tmp_path / "o"), **TINY)
    assert "FileNotFoundError" in _messages(excinfo) and "train_calibration" in _messages(excinfo)


def test_export_runs_like_the_trained_network(trained, tmp_path):
    from monai_car.networks import load_exported_carnet

    overrides = {k: v for k, v in trained["overrides"].items() if k in NETWORK_KEYS}
    path = tmp_path / "model.pt2"
    run("exporting", config_file=INFERENCE, output_dir=str(trained["out"]), export_path=str(path), **overrides)
    program, meta = load_exported_carnet(path)
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update(overrides)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(trained["out"] / "models" / "model.pt", weights_only=True)["model"])
    net.eval()
    x = torch.rand(3, 1, 32, 32)
    noise = torch.randn(3, 5, meta["noise_dim"], generator=torch.Generator().manual_seed(1))
    probs, samples = program(x, noise)
    with torch.no_grad():
        torch.testing.assert_close(probs, net(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(samples, net.sample(x, 5, noise=noise), atol=1e-5, rtol=1e-5)


def test_multi_gpu_config_trains_under_torchrun_with_gloo(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", {"training": 8, "validation": 3, "test": 1})
    out = tmp_path / "out"
    configs = f"['{TRAIN}','{CONFIGS / 'multi_gpu_train.json'}']"
    overrides = {**TINY, "dataset_dir": str(data), "output_dir": str(out)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "monai.bundle", "run", "training", "--config_file", configs, *cli_overrides(overrides)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = torch.load(out / "models" / "refinement.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 2  # 8 cases over 2 ranks, batch 2: 2 iterations per epoch
    assert (out / "models" / "model.pt").is_file()
    assert len(list((out / "logs" / "stage1").glob("events.out.tfevents.*"))) == 1  # rank 0 logs alone


def test_bundle_layout_is_complete_and_docs_link_existing_files():
    import re

    root = CONFIGS.parent
    for name in ("metadata.json", "train.json", "evaluate.json", "inference.json", "multi_gpu_train.json"):
        json.loads((CONFIGS / name).read_text())  # present and valid JSON
    assert (CONFIGS / "logging.conf").is_file()
    assert "Apache License" in (root / "LICENSE").read_text()
    readme = (root / "docs" / "README.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert links, "the bundle README shows no picture of a real run"
    missing = [link for link in links if not (root / "docs" / link).is_file()]
    assert not missing, f"bundle README links missing pictures: {missing}"


def test_paper_overlay_restores_the_papers_settings_and_only_overrides_existing_keys():
    overlay = json.loads((CONFIGS / "paper.json").read_text())
    demo = ConfigParser()
    demo.read_config(TRAIN)
    for key in overlay:  # a misspelt key would silently add a new, unused setting
        assert key in demo, key
    paper = ConfigParser()
    paper.read_config([TRAIN, str(CONFIGS / "paper.json")])
    assert paper["crop_size"] == 128 and paper["batch_size"] == 32
    assert paper["stage2"]["num_samples"] == 20 and paper["stage2"]["lr_d"] == 1e-5
    assert (paper["stage2"]["d_update_iterations"], paper["stage2"]["d_frozen_iterations"]) == (50, 200)
    assert paper["stage2"]["calibration_estimator"] == "plugin" and paper["stage1"]["lr"] == 2e-4
    assert paper["stage2"]["calibration_direction"] == "reverse"  # the paper's KL(mean G || F)
    assert paper["f_channels"] == [64, 128, 256, 512, 512]
    # the demo differs where its docs say it does
    assert demo["stage2"]["calibration_direction"] == "forward" and demo["stage2"]["d_frozen_iterations"] == 0
    assert demo["crop_size"] == 48


def test_stage2_precision_is_bf16_only_on_cpus_with_native_bfloat16():
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser["device"] = "$torch.device('cpu')"
    assert parser["stage2"]["amp"] == "auto" and parser["amp"] is False
    assert parser.get_parsed_content("stage2#autocast") is has_native_bf16("cpu")
    parser["stage2"]["amp"] = "false"  # --stage2#amp false (the CLI passes the word): fp32 on any CPU
    assert parser.get_parsed_content("stage2#autocast", lazy=False) is False
    paper = ConfigParser()
    paper.read_config([TRAIN, str(CONFIGS / "paper.json")])
    paper["device"] = "$torch.device('cuda')"  # a GPU: fp32 under "auto" (the paper's setting)
    assert paper.get_parsed_content("stage2#autocast") is False
