"""The metric classes reduce across DDP ranks (2 CPU processes, gloo), with uneven shards."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from monai_car.metrics import (
    GeneralizedEnergyDistanceMetric,
    HungarianMatchedIoUMetric,
    ModeWeightedGEDMetric,
    SoftTargetCalibrationErrorMetric,
    compute_generalized_energy_distance,
    compute_hungarian_matched_iou,
    compute_mode_weighted_ged,
    compute_soft_target_calibration_error,
)

SHARDS = (slice(0, 2), slice(2, 3))  # rank 0 gets 2 images, rank 1 gets 1


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "samples": torch.rand(3, 4, 6, 6, generator=g) < 0.4,
        "graders": torch.rand(3, 2, 6, 6, generator=g) < 0.4,
        "labels": torch.randint(0, 3, (3, 4, 6, 6), generator=g),
        "modes": torch.randint(0, 3, (3, 2, 6, 6), generator=g),
        "probs": torch.rand(3, 1, 6, 6, generator=g),
    }


def _worker(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        d = _data()
        shard = SHARDS[rank]
        weights = torch.tensor([0.7, 0.3])
        ged, hm = GeneralizedEnergyDistanceMetric(), HungarianMatchedIoUMetric()
        mw, ece = ModeWeightedGEDMetric(classes=[1, 2], mode_weights=weights), SoftTargetCalibrationErrorMetric()
        ged(y_pred=d["samples"][shard], y=d["graders"][shard])
        hm(y_pred=d["samples"][shard], y=d["graders"][shard])
        mw(y_pred=d["labels"][shard], y=d["modes"][shard])
        ece(y_pred=d["probs"][shard], y=d["graders"][shard])
        expected = {
            "ged": compute_generalized_energy_distance(d["samples"], d["graders"]).mean(),
            "hm": compute_hungarian_matched_iou(d["samples"], d["graders"]).mean(),
            "mw": compute_mode_weighted_ged(d["labels"], d["modes"], weights, [1, 2]).mean(),
            "ece": compute_soft_target_calibration_error(d["probs"], d["graders"]),
        }
        got = {"ged": ged.aggregate(), "hm": hm.aggregate(), "mw": mw.aggregate(), "ece": ece.aggregate()}
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, msg=f"rank {rank}: {key}")
        assert len(ged.get_buffer()[0]) == 3
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes each import torch and MONAI: ~20 s on 2 cores
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_metrics_reduce_across_two_ranks(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "dist_init"),), nprocs=2, join=True)
