from __future__ import annotations

import sys
from pathlib import Path

import torch
from monai.handlers import TensorBoardStatsHandler
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engines"))
from car_engine_synthetic import make_cases, make_loader, make_networks  # noqa: E402

from monai_car.engines import CAREvaluator, RefinementTrainer  # noqa: E402
from monai_car.handlers import DiscriminatorSchedule, TensorBoardMontageHandler  # noqa: E402
from monai_car.optimizers import create_car_optimizer  # noqa: E402


def test_losses_metrics_and_montages_reach_tensorboard(tmp_path):
    net, d = make_networks()
    writer = SummaryWriter(log_dir=str(tmp_path))
    trainer = RefinementTrainer(
        "cpu", 1, make_loader(make_cases(4)), net, d, create_car_optimizer(net.refinement_net),
        create_car_optimizer(d, lr=1e-5), num_samples=2, discriminator_schedule=DiscriminatorSchedule(1, 0, None),
        train_handlers=[TensorBoardStatsHandler(writer, output_transform=lambda x: x, tag_name="train_")],
    )  # fmt: skip
    trainer.run()
    evaluator = CAREvaluator(
        "cpu", make_loader(make_cases(3), shuffle=False), net, num_samples=3,
        val_handlers=[
            TensorBoardStatsHandler(writer, iteration_log=False, output_transform=lambda x: None),
            TensorBoardMontageHandler(writer, max_cases=2, num_samples=2),
        ],
    )  # fmt: skip
    evaluator.run(global_epoch=1)
    writer.flush()
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss", "loss_adv", "loss_cal", "loss_d", "d_accuracy", "lr_g", "lr_d"} <= scalars
    assert {"ged", "hm_iou", "ece"} <= scalars
    images = events.Tags()["images"]
    assert images == ["val_montage/case_000", "val_montage/case_001"]
    picture = events.Images(images[0])[0]
    assert picture.step == 1 and picture.width > 100 and picture.height > 50


def test_montage_handler_without_renderer_warns(tmp_path, monkeypatch, caplog):
    import monai_car.handlers.tensorboard_montage as module

    monkeypatch.setattr(module, "_find_renderer", lambda: None)
    net, _ = make_networks()
    handler = TensorBoardMontageHandler(log_dir=str(tmp_path), max_cases=1)
    CAREvaluator("cpu", make_loader(make_cases(2), shuffle=False), net, num_samples=2, val_handlers=[handler]).run()
    assert "no montages" in caplog.text
    handler.close()
    assert torch.is_tensor(torch.zeros(1))
