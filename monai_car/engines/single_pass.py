"""Stage 2's generator update in one pass: all ``B * M`` samples of G in one graph (the default of
:class:`~monai_car.engines.RefinementTrainer`; :mod:`~monai_car.engines.two_pass` bounds the graph instead)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import AdversarialIterationEvents

from monai_car.losses import generator_adversarial_loss
from monai_car.utils.enums import CarKeys

from .refinement_utils import repeat_per_sample
from .utils import RefinementKeys as K
from .utils import frozen_parameters

__all__ = ["single_pass_step"]


def single_pass_step(
    trainer: Any,
    engine: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    probs: torch.Tensor,
    valid: torch.Tensor | None,
    loss_ce_f: torch.Tensor | None,
) -> tuple[torch.Tensor, ...]:
    """The :class:`~monai_car.engines.RefinementTrainer`'s G (and F) update from all ``B * M`` samples in one graph.

    Args:
        trainer: the RefinementTrainer.
        engine: the engine (the trainer itself).
        x: images ``(B, C, *spatial)``; y: one grader's labels ``(B, 1, *spatial)``.
        probs: F's detached probabilities ``(B, K, *spatial)``.
        valid: non-void mask ``(B, 1, *spatial)`` or None.
        loss_ce_f: F's cross entropy when F is trained jointly (added to G's loss before the backward), else None.

    Returns:
        D's fake inputs ``(B * M, C + K, *spatial)`` (with G's graph), their detached logits, and ``loss_g``,
        ``loss_adv``, ``loss_cal`` and ``loss_refine_ce`` (None with the calibration loss).
    """
    device = engine.state.device
    out = engine.state.output
    b, m, k, sp = x.shape[0], trainer.num_samples, trainer.network.num_classes, tuple(x.shape[2:])
    trainer.refinement_net.train()
    trainer.noise_generator.manual_seed(trainer.iteration_seed(engine.state.iteration, "noise"))
    with trainer._autocast(device):
        samples = trainer._sampler.sample(
            x, m, generator=trainer.noise_generator, chunk_size=trainer.chunk_size, calibration_probs=probs
        )
    samples = samples.float()  # (B, M, K, *spatial)
    out[CarKeys.SAMPLES] = samples
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    engine.fire_event(AdversarialIterationEvents.GENERATOR_FORWARD_COMPLETED)

    fake = samples.reshape(b * m, k, *sp)
    masked_fake = fake if valid is None else fake * repeat_per_sample(valid, m)  # void pixels carry no signal
    fake_in = torch.cat([repeat_per_sample(x, m), masked_fake], dim=1)
    trainer.discriminator.train()
    with frozen_parameters(trainer.discriminator), trainer._autocast(device):
        fake_logits = trainer.discriminator(fake_in)  # gradients reach G only
    fake_logits = fake_logits.float()
    engine.fire_event(AdversarialIterationEvents.GENERATOR_DISCRIMINATOR_FORWARD_COMPLETED)

    loss_adv = generator_adversarial_loss(fake_logits)
    use_cal = trainer.generator_loss == "calibration"
    with contextlib.nullcontext() if use_cal else torch.no_grad():
        loss_cal = trainer.calibration_loss(samples, probs, mask=valid)
    loss_refine_ce = None
    if not use_cal:
        loss_refine_ce = trainer.refine_ce_loss(fake, repeat_per_sample(y, m))
    second = loss_cal if use_cal else loss_refine_ce
    loss_g = trainer.adversarial_weight * loss_adv + trainer.calibration_weight * second
    total = loss_g if loss_ce_f is None else loss_g + trainer.calibration_ce_weight * loss_ce_f
    out.update({K.LOSS: loss_g, K.LOSS_ADV: loss_adv, K.LOSS_CAL: loss_cal})
    engine.fire_event(IterationEvents.LOSS_COMPLETED)
    engine.fire_event(AdversarialIterationEvents.GENERATOR_LOSS_COMPLETED)

    trainer._zero_generator_grads()
    trainer._backward(total)
    trainer._generator_optimizer_step(engine)
    return fake_in, fake_logits.detach(), loss_g, loss_adv, loss_cal, loss_refine_ce
