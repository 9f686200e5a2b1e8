"""Stage 2's generator update in one pass: all ``B * M`` samples of G in one graph (the default of
:class:`~monai_car.engines.RefinementTrainer`; :mod:`~monai_car.engines.two_pass` bounds the graph instead)."""

from __future__ import annotations

from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import AdversarialIterationEvents

from monai_car.losses import generator_adversarial_loss
from monai_car.utils.enums import CarKeys

from .refinement_utils import fake_discriminator_input
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
    trainer.refinement_net.train()
    trainer.noise_generator.manual_seed(trainer.iteration_seed(engine.state.iteration, "noise"))
    with trainer._autocast(device):
        samples = trainer._sampler.sample(
            x,
            trainer.num_samples,
            generator=trainer.noise_generator,
            chunk_size=trainer.chunk_size,
            calibration_probs=probs,
            share_in_training=trainer.shared_encoder,
        )
    samples = samples.float()  # (B, M, K, *spatial)
    out[CarKeys.SAMPLES] = samples
    engine.fire_event(IterationEvents.FORWARD_COMPLETED)
    engine.fire_event(AdversarialIterationEvents.GENERATOR_FORWARD_COMPLETED)

    fake_in = fake_discriminator_input(x, samples, valid)
    trainer.discriminator.train()
    with frozen_parameters(trainer.discriminator), trainer._autocast(device):
        fake_logits = trainer.discriminator(fake_in)  # gradients reach G only
    fake_logits = fake_logits.float()
    engine.fire_event(AdversarialIterationEvents.GENERATOR_DISCRIMINATOR_FORWARD_COMPLETED)

    loss_adv = generator_adversarial_loss(fake_logits)
    loss_cal, loss_refine_ce, second = trainer._second_loss(samples, probs, y, valid)
    loss_g = trainer.adversarial_weight * loss_adv + trainer.calibration_weight * second
    total = loss_g if loss_ce_f is None else loss_g + trainer.calibration_ce_weight * loss_ce_f
    out.update({K.LOSS: loss_g, K.LOSS_ADV: loss_adv, K.LOSS_CAL: loss_cal})
    engine.fire_event(IterationEvents.LOSS_COMPLETED)
    engine.fire_event(AdversarialIterationEvents.GENERATOR_LOSS_COMPLETED)

    trainer._zero_generator_grads()
    trainer._backward(total)
    trainer._generator_optimizer_step(engine)
    return fake_in, fake_logits.detach(), loss_g, loss_adv, loss_cal, loss_refine_ce
