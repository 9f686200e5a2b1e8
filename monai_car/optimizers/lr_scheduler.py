"""Learning-rate schedules of CAR: one step decay (2e-4 -> 1e-4 after 30 epochs) or a linear decay."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ConstantLR, LinearLR, LRScheduler, MultiStepLR

from monai_car.utils.validation import check_positive_int

__all__ = ["LR_POLICIES", "create_lr_scheduler"]

LR_POLICIES = ("step", "linear", "constant")


def create_lr_scheduler(
    optimizer: Optimizer,
    policy: str = "step",
    decay_after: int = 30,
    gamma: float = 0.5,
    total_steps: int | None = None,
    final_factor: float = 0.0,
) -> LRScheduler:
    """A torch learning-rate scheduler for one of CAR's policies; step it with MONAI's ``LrScheduleHandler``.

    The unit of ``decay_after`` / ``total_steps`` is whatever the handler steps on: epochs with
    ``LrScheduleHandler(epoch_level=True)`` (the paper's "after 30 epochs"), iterations with ``epoch_level=False``.

    Policies:

    - ``"step"``: multiply every learning rate by ``gamma`` once, after ``decay_after`` steps (the paper: 2e-4 -> 1e-4
      for F and G, 1e-5 -> 5e-6 for D, after 30 epochs; a single decay, not one every 30 epochs).
    - ``"linear"``: decay linearly from the initial rate to ``final_factor`` times it over ``total_steps`` steps, then
      stay there (the paper's main text).
    - ``"constant"``: no change (a ``ConstantLR`` with factor 1, so that checkpoints always hold a scheduler).

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        policy: one of :data:`LR_POLICIES`.
        decay_after: steps before the single decay (``"step"``).
        gamma: the decay factor (``"step"``).
        total_steps: length of the linear decay (``"linear"``, required).
        final_factor: the final fraction of the initial rate (``"linear"``).

    Example::

        g_scheduler = create_lr_scheduler(g_optimizer, "step", decay_after=30, gamma=0.5)
        handler = LrScheduleHandler(g_scheduler, epoch_level=True, print_lr=True)
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
    if policy not in LR_POLICIES:
        raise ValueError(f"policy must be one of {LR_POLICIES}, got {policy!r}.")
    if policy == "step":
        check_positive_int(decay_after, "decay_after")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}.")
        return MultiStepLR(optimizer, milestones=[decay_after], gamma=gamma)
    if policy == "linear":
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"the linear policy needs total_steps, a positive int; got {total_steps!r}.")
        if not 0.0 <= final_factor <= 1.0:
            raise ValueError(f"final_factor must be in [0, 1], got {final_factor!r}.")
        return LinearLR(optimizer, start_factor=1.0, end_factor=final_factor, total_iters=total_steps)
    return ConstantLR(optimizer, factor=1.0, total_iters=0)
