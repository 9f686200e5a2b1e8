"""Adam as CAR trains with it: betas (0.5, 0.99), weight decay 5e-4."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = ["create_car_optimizer", "trainable_parameters"]


def trainable_parameters(module_or_params: nn.Module | Iterable[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    """The parameters with ``requires_grad`` of a module (or of an iterable of parameters).

    Raises:
        ValueError: when there is none (an optimizer over nothing is a configuration error).
    """
    params = module_or_params.parameters() if isinstance(module_or_params, nn.Module) else module_or_params
    out = [p for p in params if isinstance(p, torch.Tensor) and p.requires_grad]
    if not out:
        raise ValueError(
            f"no trainable parameter in {type(module_or_params).__name__}: an optimizer needs parameters with "
            "requires_grad=True (is the network frozen?)."
        )
    return out


def create_car_optimizer(
    module_or_params: nn.Module | Iterable[torch.nn.Parameter],
    lr: float = 2e-4,
    betas: Sequence[float] = (0.5, 0.99),
    weight_decay: float = 5e-4,
    eps: float = 1e-8,
) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the CAR defaults (paper and reference code).

    The learning rates of the paper: F and G ``2e-4`` (halved after 30 epochs), D ``1e-5`` (halved too). Weight decay
    is Adam's L2 penalty, as in the reference code (not AdamW's decoupled decay).

    Args:
        module_or_params: the network (its trainable parameters are used) or parameters.
        lr: learning rate.
        betas: Adam's ``(beta1, beta2)``.
        weight_decay: L2 penalty.
        eps: Adam's epsilon.

    Example::

        g_optimizer = create_car_optimizer(carnet.refinement_net, lr=2e-4)
        d_optimizer = create_car_optimizer(discriminator, lr=1e-5)
    """
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}.")
    betas = tuple(float(b) for b in betas)
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}.")
    if weight_decay < 0 or eps <= 0:
        raise ValueError(f"need weight_decay >= 0 and eps > 0, got {weight_decay!r} and {eps!r}.")
    return torch.optim.Adam(
        trainable_parameters(module_or_params), lr=lr, betas=betas, weight_decay=weight_decay, eps=eps
    )
