"""Non-saturating GAN losses on logits and the R1 gradient penalty."""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.nn.modules.loss import _Loss

__all__ = [
    "NonSaturatingGeneratorLoss",
    "NonSaturatingDiscriminatorLoss",
    "discriminator_adversarial_loss",
    "generator_adversarial_loss",
    "r1_penalty",
]


def _check_logits(name: str, logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.numel() == 0:
        raise ValueError(f"{name} must be a non-empty floating point tensor of discriminator logits.")


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``-E[log sigmoid(D(G(.)))] = E[softplus(-fake_logits)]`` (non-saturating G loss), averaged over all entries."""
    _check_logits("fake_logits", fake_logits)
    return F.softplus(-fake_logits).mean()


def discriminator_adversarial_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross entropy of D: ``E[softplus(-real)] + E[softplus(fake)]``.

    Each term is averaged over its own entries, so the M fake samples per image and the real labels weigh equally.
    """
    _check_logits("real_logits", real_logits)
    _check_logits("fake_logits", fake_logits)
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_inputs: torch.Tensor) -> torch.Tensor:
    """R1 zero-centred gradient penalty (Mescheder et al., 2018): ``0.5 * E_b ||d D(x_b) / d x_b||^2``.

    Multiply by the R1 weight (gamma = 10 in CAR) outside. The graph is kept (``create_graph=True``) so that the
    penalty can be back-propagated into D.

    Args:
        real_logits: D's logits on real inputs, ``(B, 1)`` or ``(B, 1, *patch)``.
        real_inputs: the inputs D saw, ``(B, C, *spatial)``, with ``requires_grad=True``.
    """
    _check_logits("real_logits", real_logits)
    if not real_inputs.requires_grad:
        raise ValueError("real_inputs must have requires_grad=True before D is run on them (call requires_grad_()).")
    if real_logits.shape[0] != real_inputs.shape[0]:
        raise ValueError(f"batch sizes differ: logits {tuple(real_logits.shape)}, inputs {tuple(real_inputs.shape)}.")
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)
    return 0.5 * grad.pow(2).reshape(grad.shape[0], -1).sum(dim=1).mean()


class NonSaturatingGeneratorLoss(_Loss):
    """Module form of :func:`generator_adversarial_loss`."""

    def forward(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return generator_adversarial_loss(fake_logits)


class NonSaturatingDiscriminatorLoss(_Loss):
    """Module form of :func:`discriminator_adversarial_loss`."""

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return discriminator_adversarial_loss(real_logits, fake_logits)
