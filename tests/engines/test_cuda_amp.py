"""CUDA-only checks: AMP with a GradScaler, checkpointing the scaler, and device-independent evaluation noise."""

from __future__ import annotations

import math

import pytest
import torch
from car_engine_synthetic import make_cases, make_loader, make_networks
from ignite.engine import Events

from monai_car.engines import CalibrationTrainer, CAREvaluator, RefinementTrainer
from monai_car.handlers import DiscriminatorSchedule
from monai_car.optimizers import create_car_optimizer
from monai_car.utils.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_amp_training_on_cuda_uses_a_grad_scaler_that_is_checkpointed(tmp_path):
    net, d = make_networks()
    f = net.calibration_net
    stage1 = CalibrationTrainer("cuda", 1, make_loader(make_cases(8)), f, create_car_optimizer(f), amp=True)
    stage1.run()
    assert stage1.scaler is not None and math.isfinite(stage1.state.output["loss"].item())
    trainer = RefinementTrainer(
        "cuda", 1, make_loader(make_cases(8)), net, d, create_car_optimizer(net.refinement_net),
        create_car_optimizer(d, lr=1e-5), num_samples=4, amp=True, clip_grad_norm=1.0,
        discriminator_schedule=DiscriminatorSchedule(1, 0, accuracy_cap=None),
    )  # fmt: skip
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"]))
    trainer.run()
    assert trainer.scaler is not None and all(math.isfinite(v) for v in losses)
    assert math.isfinite(trainer.state.output["loss_r1"]) and trainer.state.output["d_updated"] == 1.0
    assert next(trainer.refinement_net.parameters()).device.type == "cuda"
    save_dict = trainer.get_checkpoint_dict()
    assert "grad_scaler" in save_dict
    path = save_checkpoint(tmp_path / "c.pt", save_dict)
    net2, d2 = make_networks(seed=3)
    other = RefinementTrainer(
        "cuda", 1, make_loader(make_cases(8)), net2, d2, create_car_optimizer(net2.refinement_net),
        create_car_optimizer(d2, lr=1e-5), num_samples=4, amp=True,
        discriminator_schedule=DiscriminatorSchedule(1, 0, accuracy_cap=None),
    )  # fmt: skip
    load_checkpoint(path, other.get_checkpoint_dict(), map_location="cuda")
    assert other.scaler.get_scale() == trainer.scaler.get_scale()
    for p, q in zip(net.parameters(), net2.parameters()):
        assert torch.equal(p, q)


def test_evaluation_noise_is_the_same_on_cpu_and_cuda():
    net, _ = make_networks()
    results = {}
    for device in ("cpu", "cuda"):
        evaluator = CAREvaluator(device, make_loader(make_cases(4), shuffle=False), net, num_samples=3)
        outputs = []
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e, o=outputs: o.append(e.state.output))
        evaluator.run()
        results[device] = (outputs[0]["samples"].cpu(), evaluator.state.metrics)
    assert torch.allclose(results["cpu"][0], results["cuda"][0], atol=1e-4)
    assert results["cpu"][1]["ged"] == pytest.approx(results["cuda"][1]["ged"], abs=1e-3)
