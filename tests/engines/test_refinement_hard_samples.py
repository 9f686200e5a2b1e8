"""RefinementTrainer's hard-sample options: D sees label maps, the calibration loss the hard samples' frequencies,
and the sharpening term (single-pass G update)."""

from __future__ import annotations

import pytest
import torch
from car_engine_synthetic import make_cases, make_loader, make_networks, record_samples

from monai_car.engines import RefinementTrainer
from monai_car.engines.refinement_utils import straight_through_hard
from monai_car.handlers import DiscriminatorSchedule
from monai_car.losses import CalibrationLoss, calibrated_sharpening_loss, sharpening_loss
from monai_car.optimizers import create_car_optimizer


class _InputRecorder(torch.nn.Module):
    """Wraps D and records the label channels of every input it sees."""

    def __init__(self, net: torch.nn.Module, image_channels: int) -> None:
        super().__init__()
        self.net, self.image_channels = net, image_channels
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x[:, self.image_channels :].detach().clone())
        return self.net(x)


def _trainer(discriminator=None, **kwargs):
    net, d = make_networks()
    return RefinementTrainer(
        "cpu",
        1,
        make_loader(make_cases(4), batch_size=4),
        net,
        discriminator or d,
        create_car_optimizer(net.refinement_net),
        create_car_optimizer(d, lr=1e-5),
        num_samples=3,
        discriminator_schedule=DiscriminatorSchedule(1, 0, accuracy_cap=None),
        **kwargs,
    )


def test_straight_through_value_is_the_argmax_and_gradient_the_identity():
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(2, 3, 4, 5, 5, generator=gen), dim=2).requires_grad_(True)
    hard = straight_through_hard(p)
    expected = torch.nn.functional.one_hot(p.argmax(2), 4).movedim(-1, 2).float()
    torch.testing.assert_close(hard, expected, rtol=0, atol=1e-6)
    upstream = torch.randn(hard.shape, generator=gen)
    (hard * upstream).sum().backward()
    torch.testing.assert_close(p.grad, upstream)


def test_discriminator_sees_label_maps_as_its_reals():
    net, d = make_networks()
    rec = _InputRecorder(d, image_channels=1)
    trainer = _trainer(discriminator=rec, hard_samples="discriminator")
    trainer.run()
    fakes_for_g = rec.inputs[0]  # G's adversarial pass: the B * M fakes
    assert fakes_for_g.shape[0] == 4 * 3
    assert torch.all((fakes_for_g == 0) | (fakes_for_g == 1)) and torch.all(fakes_for_g.sum(1) == 1)
    d_update = rec.inputs[2]  # D's update: reals then fakes, all one-hot
    assert torch.all((d_update == 0) | (d_update == 1))
    # the default (the paper) gives D G's soft probabilities
    rec_soft = _InputRecorder(d, image_channels=1)
    _trainer(discriminator=rec_soft).run()
    assert not torch.all((rec_soft.inputs[0] == 0) | (rec_soft.inputs[0] == 1))


@pytest.mark.parametrize("hard_samples, on_hard", [("calibration", True), ("discriminator", False), ("all", True)])
def test_calibration_loss_on_hard_or_soft_samples(hard_samples, on_hard):
    trainer = _trainer(hard_samples=hard_samples)
    seen = record_samples(trainer)

    trainer.run()
    samples = seen["samples"]
    hard = torch.nn.functional.one_hot(samples.argmax(2), samples.shape[2]).movedim(-1, 2).float()
    expected = CalibrationLoss()(hard if on_hard else samples, seen["probs"]).item()
    assert trainer.state.output["loss_cal"] == pytest.approx(expected, rel=1e-5)


def test_sharpening_weight_enters_g_loss():
    torch.manual_seed(0)
    trainer = _trainer(sharpening_weight=2.0)
    seen = record_samples(trainer)

    trainer.run()
    out = trainer.state.output
    expected = 10 * out["loss_adv"] + 5 * out["loss_cal"] + 2.0 * sharpening_loss(seen["samples"], None).item()
    assert out["loss"] == pytest.approx(expected, rel=1e-5)


def test_calibrated_sharpening_target_enters_g_loss():
    torch.manual_seed(0)
    trainer = _trainer(sharpening_weight=2.0, sharpening_target="calibrated")
    seen = record_samples(trainer)

    trainer.run()
    out = trainer.state.output
    sharpening = calibrated_sharpening_loss(seen["samples"], seen["probs"]).item()
    assert sharpening != pytest.approx(sharpening_loss(seen["samples"], None).item(), rel=1e-3)
    assert out["loss"] == pytest.approx(10 * out["loss_adv"] + 5 * out["loss_cal"] + 2.0 * sharpening, rel=1e-5)


def test_option_checks():
    with pytest.raises(ValueError, match="hard_samples"):
        _trainer(hard_samples="generator")
    with pytest.raises(ValueError, match="sharpening_weight"):
        _trainer(sharpening_weight=-1.0)
    with pytest.raises(ValueError, match="sharpening_target"):
        _trainer(sharpening_weight=1.0, sharpening_target="mode")
    with pytest.raises(NotImplementedError, match="single-pass"):
        _trainer(hard_samples="all", sample_chunk_size=1)
