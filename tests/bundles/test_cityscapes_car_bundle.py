"""The Cityscapes bundle on generated scenes: configs against MONAI's conventions, a few training iterations through
``monai.bundle run``, the known-distribution evaluation report, per-image inference, export."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_fixtures import CITYSCAPES_NETWORK, CITYSCAPES_TINY, run_bundle_training
from monai.bundle import ConfigParser, run
from PIL import Image

from monai_car.data import build_synthetic_scenes
from monai_car.networks import CARNet, load_exported_carnet
from monai_car.utils.cityscapes_classes import COPY_IDS

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "cityscapes_car"
CONFIGS = BUNDLE / "configs"
TRAIN = str(CONFIGS / "train.json")
EVALUATE = [TRAIN, str(CONFIGS / "evaluate.json")]
INFERENCE = str(CONFIGS / "inference.json")
OFFICIAL_SCHEMA = BUNDLE.parents[2] / "shared" / "data" / "monai_bundle_schema" / "meta_schema_20240725.json"
NETWORK, TINY = CITYSCAPES_NETWORK, CITYSCAPES_TINY


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cityscapes_bundle")
    data = build_synthetic_scenes(root / "data", 6, 2, 2, size=(32, 64))
    out = root / "out"
    proc = run_bundle_training(TRAIN, {**TINY, "dataset_dir": str(data), "output_dir": str(out)}, root)
    return {"data": data, "out": out, "log": proc.stdout + proc.stderr}


def test_configs_build_the_network_inference_rebuilds_and_metadata_is_official():
    parser = ConfigParser()
    parser.read_config(TRAIN)
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, CARNet) and net.num_classes == 25
    x = torch.rand(2, 28, 32, 64)  # RGB + the black box's 25 one-hot channels
    assert net(x).shape == (2, 25, 32, 64) and net.sample(x, 2).shape == (2, 2, 25, 32, 64)
    infer = ConfigParser()
    infer.read_config(INFERENCE)
    for key in ("calibration_net", "refinement_net", "network_def", "num_classes", "in_channels", "g_channels"):
        assert infer[key] == parser[key], key
    if not OFFICIAL_SCHEMA.is_file():
        pytest.skip(f"MONAI's official metadata schema is not at {OFFICIAL_SCHEMA} (../shared is absent here)")
    from monai.bundle import verify_metadata, verify_net_in_out

    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(OFFICIAL_SCHEMA))
    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"), config_file=TRAIN, n=2)


def test_training_flips_the_label_not_the_black_box(tmp_path):
    data = build_synthetic_scenes(tmp_path / "data", 2, 1, 1, size=(32, 64))
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update({"dataset_dir": str(data), "crop_size": [32, 64]})
    chain, cases = parser.get_parsed_content("train_transforms"), parser.get_parsed_content("train_datalist")
    flipped_labels = 0
    for seed in range(12):
        chain.set_random_state(seed=seed)
        out = chain(dict(cases[0]))
        flipped_labels += int(np.isin(out["label"].numpy(), COPY_IDS).any())
        assert out["image"].shape == (28, 32, 64)
        assert out["image"][[3 + c for c in COPY_IDS]].sum() == 0  # the black box never shows a copy to F
    assert flipped_labels > 0


def test_training_writes_the_model_and_logs_d(trained):
    models = trained["out"] / "models"
    assert {"calibration.pt", "refinement.pt", "model.pt"} <= {p.name for p in models.iterdir()}
    assert "D update phase" in trained["log"] and "mode_ged" in trained["log"]
    # model selection on G's mean calibration offset (stage2#selection_metric), GED still logged
    assert "Key metric: g_offset_mean best value" in trained["log"]


def test_model_holds_the_moving_average_of_g(trained):
    # model.pt (validated, used by evaluation and inference) carries the exponential moving average of G's weights,
    # which the stage-2 checkpoint keeps for a resume; the raw G of the last iteration is a different set of weights
    models = trained["out"] / "models"
    model = torch.load(models / "model.pt", weights_only=True)["model"]
    checkpoint = torch.load(models / "refinement.pt", weights_only=True)
    ema, raw = checkpoint["ema_refinement_net"], checkpoint["refinement_net"]
    assert set(ema) == set(raw)
    for name, value in ema.items():
        torch.testing.assert_close(model[f"refinement_net.{name}"], value)
    assert any(not torch.equal(ema[n], raw[n]) for n in raw if raw[n].is_floating_point())
    for name, value in checkpoint["calibration_net"].items():
        torch.testing.assert_close(model[f"calibration_net.{name}"], value)


def test_evaluation_reports_the_known_distribution_figures(trained):
    run("evaluating", config_file=EVALUATE, dataset_dir=str(trained["data"]), output_dir=str(trained["out"]), **TINY)
    ev = trained["out"] / "eval"
    metrics = json.loads((ev / "metrics.json").read_text())["metrics"]
    keys = ("mode_ged", "control_ged", "f_offset_mean", "g_offset_worst", "control_offset_worst", "ece_calibration")
    for key in (*keys, "sample_sharpness", "control_predicted_road2"):
        assert key in metrics, key
    assert 0.0 <= metrics["control_ged"] < metrics["mode_ged"] + 1.0
    report = (ev / "report.md").read_text()
    assert "mode-weighted GED" in report and "| road2 | 0.235 |" in report and "control's offset" in report
    # the test split's 2 scenes (counted as they pass: the known-distribution metrics keep no per-case rows)
    assert "2 cases, 16 samples per case" in report
    assert {"calibration_bars.png", "reliability_calibration.png", "montage_test_0000.png"} <= {
        p.name for p in ev.iterdir()
    }


def test_inference_writes_samples_and_maps_per_image(trained):
    run("inferring", config_file=INFERENCE, dataset_dir=str(trained["data"]), output_dir=str(trained["out"]),
        num_samples=3, **NETWORK)  # fmt: skip
    inference = trained["out"] / "inference"
    case = inference / "test_0000"
    assert {"sample_00.png", "sample_02.png", "consensus.png", "entropy_samples.png", "montage.png"} <= {
        p.name for p in case.iterdir()
    }
    sample = np.asarray(Image.open(case / "sample_01.png"))
    assert sample.shape == (32, 64) and sample.max() < 25
    rows = list(csv.DictReader(open(inference / "summary.csv")))
    assert [r["case_id"] for r in rows] == ["test_0000", "test_0001"] and rows[0]["num_samples"] == "3"


def test_export_runs_like_the_trained_network(trained, tmp_path):
    path = tmp_path / "model.pt2"
    run("exporting", config_file=INFERENCE, dataset_dir=str(trained["data"]), output_dir=str(trained["out"]),
        export_path=str(path), **NETWORK)  # fmt: skip
    program, meta = load_exported_carnet(path)
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser.update(NETWORK)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(trained["out"] / "models" / "model.pt", weights_only=True)["model"])
    net.eval()
    x = torch.rand(1, 28, 32, 64)
    noise = torch.randn(1, 4, meta["noise_dim"], generator=torch.Generator().manual_seed(1))
    probs, samples = program(x, noise)
    with torch.no_grad():
        torch.testing.assert_close(samples, net.sample(x, 4, noise=noise), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(probs, net(x), atol=1e-5, rtol=1e-5)
