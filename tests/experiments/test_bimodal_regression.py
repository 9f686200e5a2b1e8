from __future__ import annotations

import json

from experiments import bimodal_regression
from experiments.bimodal_regression import main


def test_cli_single_run(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--pi", "0.6", "--sigma", "0.01", "--calibration-weight", "0", "--iterations", "10", "--eval-every", "5"]
    assert main([*args, "--batch-size", "8", "--seed", "1", "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    got = (res["pi"], res["sigma"], res["calibration_weight"], res["seed"], res["iterations"])
    assert got == (0.6, 0.01, 0.0, 1, 10)
    assert "calibration_offset" in json.loads(capsys.readouterr().out)
    assert main(["--pi", "1.5", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert not (tmp_path / "bad" / "results.json").exists()


def test_cli_sweep_wiring(tmp_path, monkeypatch):
    seen = {}

    def fake_sweep(out_dir, **kwargs):
        seen.update(kwargs, out_dir=out_dir)
        raise ValueError("stop here")

    monkeypatch.setattr(bimodal_regression, "run_sweep", fake_sweep)
    argv = ["--sweep", "--repeats", "3", "--iterations", "50", "--seed", "7", "--runs-dir", "R", "--out", str(tmp_path)]
    assert main([*argv, "--pis", "0.9", "--sigmas", "0.01", "0.03"]) == 2
    assert seen["pis"] == (0.9,) and seen["sigmas"] == (0.01, 0.03)
    ablation = ["--noise-dim", "8", "--discriminator-off", "0", "--calibration-estimator", "biased"]
    assert main([*argv, "--resume", *ablation, "--r1-weight", "10", "--calibration-pretrain-iterations", "0"]) == 2
    assert seen["out_dir"] == str(tmp_path) and seen["runs_dir"] == "R"
    assert (seen["repeats"], seen["iterations"], seen["seed"], seen["resume"]) == (3, 50, 7, True)
    assert seen["pis"] == (0.5, 0.6, 0.9) and seen["sigmas"] == (0.01, 0.02, 0.03)
    assert (seen["noise_dim"], seen["discriminator_off"], seen["calibration_estimator"]) == (8, 0, "biased")
    assert (seen["r1_weight"], seen["calibration_pretrain_iterations"], seen["eval_min_separation"]) == (10.0, 0, 0.2)
