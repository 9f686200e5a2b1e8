from __future__ import annotations

import json

import pytest

from monai_car.handlers import format_evaluation_summary
from monai_car.handlers.evaluation_summary import main

METRICS = {
    "ged": 0.3,
    "ged_16": 0.31,
    "ged_100": 0.245,
    "hm_iou": 0.55,
    "hm_iou_16": 0.561,
    "ece": 0.0123,
    "ece_calibration": 0.004,
    "sample_sharpness": 0.08,
    "presence_ece": 0.052,
    "presence_ece_floor": 0.035,
    "presence_ece_floor_p95": 0.05,
    "hard_pixel_ece": 0.041,
    "f_fit": 0.93,
}


def test_summary_shows_every_figure():
    text = format_evaluation_summary(METRICS)
    for piece in ("GED(16) 0.310", "GED(100) 0.245", "HM-IoU(16) 0.561", "ECE G's mean 1.23 %", "ECE F 0.40 %",
                  "sample sharpness      0.080", "lesion-presence ECE   0.052", "floor of a perfect model with these "
                  "graders: 0.035", "hard-pixel ECE        0.041", "F's fit               0.930"):  # fmt: skip
        assert piece in text, piece
    # without the fidelity keys: only the sample-set line; NaN / None as n/a
    short = format_evaluation_summary({"ged": float("nan"), "hm_iou": None})
    assert short == "sample sets:  GED n/a, HM-IoU n/a, ECE G's mean n/a %, ECE F n/a %"
    with pytest.raises(TypeError, match="mapping"):
        format_evaluation_summary([1, 2])


def test_console_command(tmp_path, capsys):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"metrics": METRICS}))
    assert main([str(path)]) == 0
    assert "lesion-presence ECE   0.052" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    path.write_text("{not json")
    assert main([str(path)]) == 2
    assert "cannot read" in capsys.readouterr().err
    path.write_text("[]")
    assert main([str(path)]) == 2


def test_a_known_distribution_evaluation_is_summarised_with_its_control_and_offsets():
    metrics = {
        "mode_ged": 0.10,
        "control_ged": 0.04,
        "f_offset_mean": 0.012,
        "f_offset_worst": 0.031,
        "g_offset_mean": 0.02,
        "g_offset_worst": 0.05,
        "ece_calibration": 0.004,
        "ece_samples": 0.03,
        "sample_sharpness": 0.04,
    }
    text = format_evaluation_summary(metrics)
    assert "mode-weighted GED 0.100 (true-distribution control 0.040, difference 0.060)" in text
    assert "F: mean 1.2 %, worst 3.1 %; G (hard samples): mean 2.0 %, worst 5.0 %" in text
    assert "GED(" not in text and "sample sharpness 0.040" in text
