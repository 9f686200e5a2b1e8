"""The LIDC bundle's resume: a training killed with SIGKILL (kill -9) in stage 1 or in stage 2 and resumed with one
command ends with the uninterrupted run's checkpoints, model and evaluation, bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bundle_fixtures import CONFIGS, TINY, assert_same, cli_overrides, make_tiny_dataset
from monai.bundle import run

TRAIN = str(CONFIGS / "train.json")
EVALUATE = [TRAIN, str(CONFIGS / "evaluate.json")]
OVERRIDES = {**TINY, "stage1#max_epochs": 4, "stage2#max_epochs": 4}  # room to be killed after an epoch of either


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _training(data: Path, out: Path, **extra) -> list[str]:
    overrides = {**OVERRIDES, "dataset_dir": str(data), "output_dir": str(out), **extra}
    return [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", TRAIN, *cli_overrides(overrides)]


def _evaluate(data: Path, out: Path) -> dict:
    overrides = {**OVERRIDES, "dataset_dir": str(data), "output_dir": str(out), "eval_num_samples": 8}
    run("evaluating", config_file=EVALUATE, eval_dir=str(out / "eval"), **overrides)
    return json.loads((out / "eval" / "metrics.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("resume")
    data = make_tiny_dataset(root / "data")
    out = root / "full"
    proc = subprocess.run(_training(data, out), cwd=root, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"root": root, "data": data, "out": out, "metrics": _evaluate(data, out)}


@pytest.mark.slow
@pytest.mark.parametrize(
    "marker, unwritten, resume_flag",
    [
        ("stage2_checkpoint_epoch=1.pt", "refinement.pt", "resume"),  # killed in stage 2's second epoch
        ("stage1_checkpoint_epoch=1.pt", "calibration.pt", "stage2#resume"),  # in stage 1; the older spelling
    ],
)
def test_a_training_killed_mid_stage_resumes_with_one_command_to_the_uninterrupted_result(
    uninterrupted, marker, unwritten, resume_flag
):
    root, data = uninterrupted["root"], uninterrupted["data"]
    out = root / f"killed_{unwritten.split('.')[0]}"
    log = open(root / f"{out.name}.log", "w")
    proc = subprocess.Popen(_training(data, out), cwd=root, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while not (out / "models" / marker).exists():
            assert proc.poll() is None, f"the training ended before {marker} appeared"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    models = out / "models"
    assert proc.returncode == -signal.SIGKILL
    assert not (models / unwritten).exists(), "killed too late: the stage had completed"

    resume = subprocess.run(
        _training(data, out, **{resume_flag: True}), cwd=root, env=_env(), capture_output=True, text=True, timeout=600
    )
    log = resume.stdout + resume.stderr
    assert resume.returncode == 0, log[-3000:]
    assert f"resumes from {models / marker}" in log
    if unwritten == "refinement.pt":
        assert "stage1 is complete in" in log and "CalibrationTrainer" not in log  # stage 1 not trained again
    else:
        assert "stage2 trains afresh (stage1 trains in this run)" in log

    full = uninterrupted["out"] / "models"
    for name in ("calibration.pt", "refinement.pt", "model.pt"):
        assert_same(torch.load(full / name, weights_only=True), torch.load(models / name, weights_only=True), name)
    # each stage keeps its latest epoch checkpoint only (the one resumed from was replaced)
    assert sorted(p.name for p in models.iterdir()) == sorted(p.name for p in full.iterdir())
    assert _evaluate(data, out) == uninterrupted["metrics"]
