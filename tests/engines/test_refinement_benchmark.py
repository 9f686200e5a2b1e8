"""Timing of one stage-2 iteration at the paper's LIDC scale (slow: run with `pytest -m slow -s`)."""

from __future__ import annotations

import math
import resource
import time

import pytest
import torch
from ignite.engine import Events

from monai_car.engines import RefinementTrainer
from monai_car.handlers import DiscriminatorSchedule
from monai_car.networks import CalibrationSegNet, CARDiscriminator, CARNet, RefinementUNet
from monai_car.optimizers import create_car_optimizer
from monai_car.utils.enums import CarKeys


@pytest.mark.slow
@pytest.mark.parametrize("update_d", [True, False])
def test_stage2_iteration_time_with_default_lidc_networks(update_d):
    batch, m, size, iterations = 8, 20, 128, 2
    torch.manual_seed(0)
    net = CARNet(CalibrationSegNet(), RefinementUNet(in_channels=3))
    d = CARDiscriminator(in_channels=3)
    g = torch.Generator().manual_seed(0)
    batches = []
    for i in range(iterations):
        labels = (torch.rand(batch, 4, size, size, generator=g) > 0.7).to(torch.uint8)
        batches.append(
            {
                CarKeys.IMAGE: torch.rand(batch, 1, size, size, generator=g),
                CarKeys.GRADER_LABEL: labels[:, :1].clone(),
                CarKeys.LABEL: labels,
                CarKeys.CASE_ID: [f"c{i}_{j}" for j in range(batch)],
            }
        )
    schedule = DiscriminatorSchedule(1, 0, None) if update_d else DiscriminatorSchedule(1, 10**9, None, False)
    trainer = RefinementTrainer(
        "cpu", 1, batches, net, d, create_car_optimizer(net.refinement_net), create_car_optimizer(d, lr=1e-5),
        num_samples=m, discriminator_schedule=schedule,
    )  # fmt: skip
    stamps: list[float] = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: stamps.append(time.perf_counter()))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: stamps.append(time.perf_counter()))
    trainer.run()
    seconds = [stamps[i + 1] - stamps[i] for i in range(0, len(stamps), 2)]
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"\nstage 2, B={batch}, M={m}, {size}x{size}, D updated={update_d}, {torch.get_num_threads()} threads: "
          f"seconds per iteration {[round(s, 1) for s in seconds]}, peak RSS {peak_gb:.1f} GB")  # fmt: skip
    assert math.isfinite(trainer.state.output["loss"]) and trainer.state.output["d_updated"] == float(update_d)
