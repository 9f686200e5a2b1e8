from __future__ import annotations

import json

import pytest

import experiments
from experiments.bimodal_sweep import PAPER_PIS, PAPER_SIGMAS, run_experiment, run_sweep
from experiments.bimodal_train import BimodalConfig

TINY = {
    "iterations": 20,
    "batch_size": 8,
    "num_samples": 3,
    "hidden": 8,
    "eval_every": 10,
    "eval_points": 4,
    "eval_samples": 5,
    "final_eval_samples": 10,
    "calibration_pretrain_iterations": 5,
    "calibration_batch_size": 16,
}


def test_exports_and_paper_grid():
    assert {"run_experiment", "run_sweep", "BimodalConfig", "sample_bimodal"} <= set(experiments.__all__)
    assert PAPER_PIS == (0.5, 0.6, 0.9) and PAPER_SIGMAS == (0.01, 0.02, 0.03)


def test_run_experiment_writes_results(tmp_path):
    cfg = BimodalConfig(pi=0.9, sigma=0.03, calibration_weight=1.0, seed=2, **TINY)
    res = run_experiment(cfg, tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["offset.png", "results.json", "samples.png"]
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    for key in ("pi", "sigma", "calibration_weight", "seed", "iterations", "mode_frequency", "calibration_offset"):
        assert key in on_disk
    assert (on_disk["pi"], on_disk["sigma"], on_disk["seed"], on_disk["iterations"]) == (0.9, 0.03, 2, 20)
    freqs = on_disk["mode_frequency"]
    assert set(freqs) == {"0.0-0.4", "0.4-0.8"}
    expected = (abs(freqs["0.0-0.4"] - 0.9) + abs(freqs["0.4-0.8"] - 0.9)) / 2
    assert on_disk["calibration_offset"] == pytest.approx(expected)
    assert [h["iteration"] for h in on_disk["history"]] == [0, 10, 20]
    assert (tmp_path / "run" / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_small_sweep_summary_and_resume(tmp_path):
    kwargs = {"runs_dir": tmp_path / "runs", "repeats": 2, "seed": 4, "pis": (0.9,), "sigmas": (0.02,), **TINY}
    summary = run_sweep(tmp_path / "out", progress=False, **kwargs)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["summary.json", "summary.md", "sweep_offsets.png"]
    assert len(list((tmp_path / "runs").iterdir())) == 4  # 2 lambdas x 2 seeds, outside the summary folder
    assert [(r["calibration_weight"], r["seeds"]) for r in summary["rows"]] == [(0.0, [4, 5]), (1.0, [4, 5])]
    finals = {
        (r["calibration_weight"], r["seed"]): r["calibration_offset"]
        for r in (json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/results.json"))
    }
    row1 = summary["rows"][1]
    assert row1["final_offsets"] == [finals[(1.0, 4)], finals[(1.0, 5)]]
    (comp,) = summary["comparison"]
    assert comp["lambda1_lower"] == (row1["final_offset_mean"] < summary["rows"][0]["final_offset_mean"])
    md = (tmp_path / "out" / "summary.md").read_text()
    assert md.count("| 0.9 | 0.02 |") == 3  # two rows plus the comparison row
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["timing"]["runs_reused"] == 0

    again = run_sweep(tmp_path / "out", progress=False, resume=True, **kwargs)
    assert again["timing"]["runs_reused"] == 4
    assert again["rows"] == summary["rows"]
    with pytest.raises(ValueError, match="set by the sweep"):
        run_sweep(tmp_path / "x", pi=0.5, **TINY)
