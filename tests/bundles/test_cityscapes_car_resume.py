"""The Cityscapes bundle's resume of stage 2 with the moving average of G: a run holding only stage 1 and stage 2's
first epoch checkpoint (as a training stopped in epoch 2 leaves it), resumed with ``--resume true``, ends with the
uninterrupted run's G, moving average of G and D."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from bundle_fixtures import CITYSCAPES_TINY, cli_overrides

from monai_car.data import build_synthetic_scenes

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "cityscapes_car" / "configs"
TRAIN = str(CONFIGS / "train.json")


def _train(data: Path, out: Path, root: Path, **extra) -> None:
    overrides = {**CITYSCAPES_TINY, "dataset_dir": str(data), "output_dir": str(out), **extra}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", TRAIN, *cli_overrides(overrides)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _assert_equal_states(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys(), where
    for key in a:
        assert torch.equal(a[key], b[key]), f"{where}/{key}"


def test_stage2_resumed_after_an_epoch_ends_with_the_uninterrupted_moving_average(tmp_path):
    data = build_synthetic_scenes(tmp_path / "data", 6, 2, 2, size=(32, 64))
    full, part = tmp_path / "full", tmp_path / "part"
    # the uninterrupted run keeps its two stage-2 epoch checkpoints; the first is where the stopped run would be
    _train(data, full, tmp_path, **{"stage2#max_epochs": 2, "stage2#checkpoint_saver#n_saved": 2})
    (part / "models").mkdir(parents=True)
    for name in ("calibration.pt", "stage1_checkpoint_epoch=1.pt", "stage2_checkpoint_epoch=1.pt"):
        shutil.copy2(full / "models" / name, part / "models" / name)
    _train(data, part, tmp_path, resume=True, **{"stage2#max_epochs": 2})
    a = torch.load(full / "models" / "refinement.pt", weights_only=True)
    b = torch.load(part / "models" / "refinement.pt", weights_only=True)
    for entry in ("refinement_net", "ema_refinement_net", "discriminator"):
        _assert_equal_states(a[entry], b[entry], entry)
    epoch1 = torch.load(full / "models" / "stage2_checkpoint_epoch=1.pt", weights_only=True)["ema_refinement_net"]
    assert any(not torch.equal(epoch1[k], a["ema_refinement_net"][k]) for k in epoch1)  # the average moved on
    assert any(not torch.equal(a["ema_refinement_net"][k], a["refinement_net"][k]) for k in a["refinement_net"])
