"""The Cityscapes bundle's resume of stage 2 with the moving average of G: a run holding only stage 1 and stage 2's
first epoch checkpoint (as a training stopped in epoch 2 leaves it), resumed with ``--resume true``, ends with the
uninterrupted run's G, moving average of G and D."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from bundle_fixtures import CITYSCAPES_TINY, assert_same, run_bundle_training

from monai_car.data import build_synthetic_scenes

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "cityscapes_car" / "configs"
TRAIN = str(CONFIGS / "train.json")


def _train(data: Path, out: Path, root: Path, **extra) -> None:
    run_bundle_training(TRAIN, {**CITYSCAPES_TINY, "dataset_dir": str(data), "output_dir": str(out), **extra}, root)


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
        assert_same(a[entry], b[entry], entry)
    epoch1 = torch.load(full / "models" / "stage2_checkpoint_epoch=1.pt", weights_only=True)["ema_refinement_net"]
    assert any(not torch.equal(epoch1[k], a["ema_refinement_net"][k]) for k in epoch1)  # the average moved on
    assert any(not torch.equal(a["ema_refinement_net"][k], a["refinement_net"][k]) for k in a["refinement_net"])
