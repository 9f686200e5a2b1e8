"""Small pieces of the stage-2 iteration: argument checks, per-sample replication, D's inputs and accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim import Optimizer

from monai_car.handlers.discriminator_schedule import DiscriminatorSchedule
from monai_car.networks import CARNet
from monai_car.utils.validation import check_positive_int

__all__ = [
    "GENERATOR_LOSSES",
    "SHARPENING_TARGETS",
    "HARD_SAMPLE_OPTIONS",
    "as_floats",
    "check_refinement_args",
    "learning_rate",
    "discriminator_accuracies",
    "fake_discriminator_input",
    "one_hot_label_map",
    "repeat_per_sample",
    "straight_through_hard",
]

HARD_SAMPLE_OPTIONS = ("none", "discriminator", "calibration", "all")
"""``hard_samples`` options: where G's hard samples (straight-through) replace its probabilities."""

GENERATOR_LOSSES = ("calibration", "refine_ce")
"""``generator_loss`` options: CAR's calibration loss, or cross entropy of G's samples (the paper's control)."""

SHARPENING_TARGETS = ("argmax", "calibrated")
"""What the stage-2 trainer's sharpening term pulls each of G's samples toward."""


def repeat_per_sample(x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """``(B, *rest) -> (B * M, *rest)``, row ``b`` repeated ``M`` times in a row (row ``b * M + m``), which is
    ``CARNet.sample``'s ``(B, M, ...)`` layout flattened."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1 or x.ndim < 1:
        raise ValueError(f"need a batch-first tensor and num_samples >= 1, got {tuple(x.shape)} and {num_samples!r}.")
    return x.unsqueeze(1).expand(x.shape[0], num_samples, *x.shape[1:]).reshape(-1, *x.shape[1:])


def fake_discriminator_input(x: torch.Tensor, samples: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """D's input for G's samples: ``(B * S, C + K, *spatial)``, row ``b * S + s`` the image ``b`` concatenated with
    its sample ``s``, zeroed on void pixels (``valid`` false) so that they carry no signal.

    Args:
        x: images ``(B, C, *spatial)``.
        samples: ``(B, S, K, *spatial)`` probabilities.
        valid: ``(B, 1, *spatial)`` non-void mask, or None.
    """
    b, s = samples.shape[:2]
    fake = samples.reshape(b * s, *samples.shape[2:])
    if valid is not None:
        fake = fake * repeat_per_sample(valid, s)
    return torch.cat([repeat_per_sample(x, s), fake], dim=1)


def straight_through_hard(samples: torch.Tensor) -> torch.Tensor:
    """G's hard samples with the straight-through gradient: ``one_hot(argmax p) + p - p.detach()``, ``(B, M, K, ...)``.

    The value is the one-hot label map (the hard samples, whose frequencies the fidelity report measures); the
    gradient is the identity onto the probabilities ``p``.
    """
    hard = F.one_hot(samples.argmax(dim=2), samples.shape[2]).movedim(-1, 2).to(samples.dtype)
    return hard + (samples - samples.detach())  # exactly the one-hot values (no rounding of hard + p - p)


def one_hot_label_map(y: torch.Tensor, num_classes: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """One-hot ``(B, K, *spatial)`` float map of integer labels ``(B, 1, *spatial)``; zero where ``valid`` is false."""
    if y.ndim < 3 or y.shape[1] != 1:
        raise ValueError(f"labels must be (B, 1, *spatial) class indices, got {tuple(y.shape)}.")
    out = F.one_hot(y.squeeze(1).long().clamp(0, num_classes - 1), num_classes).movedim(-1, 1).float()
    return out if valid is None else out * valid


def discriminator_accuracies(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D's accuracy on reals (logit > 0) and on fakes (logit < 0); their mean is the balanced accuracy."""
    return (real_logits > 0).float().mean(), (fake_logits < 0).float().mean()


def learning_rate(optimizer: Optimizer | None) -> float | None:
    """The first parameter group's learning rate (None without an optimizer)."""
    return None if optimizer is None else float(optimizer.param_groups[0]["lr"])


def as_floats(values: Mapping[Any, Any]) -> dict[str, float]:
    """``{str(key): float}`` with one-element tensors read out and ``None`` (not computed) as NaN.

    The tensors of a device are read out together (stacked, then one ``tolist``): one host synchronisation per
    device instead of one ``.item()`` per value, which on a GPU would stall the stream once per logged loss.

    Raises:
        ValueError: a tensor value holds more than one element (names the key).
    """
    keys = [str(k) for k in values]
    out: dict[str, float] = {}
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for key, value in zip(keys, values.values()):
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(f"{key}: expected a one-element tensor, got shape {tuple(value.shape)}.")
            by_device.setdefault(value.device, []).append((key, value.detach().reshape(())))
        else:
            out[key] = float("nan") if value is None else float(value)
    for items in by_device.values():
        read = torch.stack([t.to(torch.float64) for _, t in items]).tolist()
        out.update({key: float(v) for (key, _), v in zip(items, read)})
    return {key: out[key] for key in keys}


def check_refinement_args(
    network: Any,
    discriminator: Any,
    g_optimizer: Any,
    d_optimizer: Any,
    f_optimizer: Any,
    train_calibration: bool,
    num_samples: int,
    generator_loss: str,
    schedule: Any,
    clip_grad_norm: float | None,
    sample_chunk_size: int | None,
    weights: Mapping[str, float],
    hard_samples: str = "none",
) -> None:
    """Validate the RefinementTrainer's arguments, with messages that say what to change."""
    if not isinstance(network, CARNet):
        raise TypeError(f"network must be a monai_car.networks.CARNet (F and G), got {type(network).__name__}.")
    if not isinstance(discriminator, nn.Module):
        raise TypeError(f"discriminator must be a torch.nn.Module, got {type(discriminator).__name__}.")
    for name, opt in (("g_optimizer", g_optimizer), ("d_optimizer", d_optimizer)):
        if not isinstance(opt, Optimizer):
            raise TypeError(f"{name} must be a torch.optim.Optimizer, got {type(opt).__name__}.")
    if train_calibration and not isinstance(f_optimizer, Optimizer):
        raise ValueError("train_calibration=True (joint training of F) needs f_optimizer, F's optimizer.")
    if not train_calibration and f_optimizer is not None:
        raise ValueError("f_optimizer was given but F is frozen (train_calibration=False): set train_calibration=True.")
    check_positive_int(num_samples, "num_samples (M)")
    if generator_loss not in GENERATOR_LOSSES:
        raise ValueError(f"generator_loss must be one of {GENERATOR_LOSSES}, got {generator_loss!r}.")
    if schedule is not None and not isinstance(schedule, DiscriminatorSchedule):
        raise TypeError(f"discriminator_schedule must be a DiscriminatorSchedule, got {type(schedule).__name__}.")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be positive or None, got {clip_grad_norm!r}.")
    if sample_chunk_size is not None and (
        isinstance(sample_chunk_size, bool) or not isinstance(sample_chunk_size, int) or sample_chunk_size < 1
    ):
        raise ValueError(
            f"sample_chunk_size must be None (single pass) or a positive int (samples per image per chunk), "
            f"got {sample_chunk_size!r}."
        )
    for name, w in weights.items():
        if not float(w) >= 0:
            raise ValueError(f"{name} must be a non-negative number, got {w!r}.")
    if hard_samples not in HARD_SAMPLE_OPTIONS:
        raise ValueError(f"hard_samples must be one of {HARD_SAMPLE_OPTIONS}, got {hard_samples!r}.")
    if sample_chunk_size is not None and (hard_samples != "none" or float(weights.get("sharpening_weight", 0)) > 0):
        raise NotImplementedError(
            "hard_samples and sharpening_weight are implemented in the single-pass G update only: set "
            "sample_chunk_size=None (--stage2#sample_chunk_size null), or hard_samples='none' and sharpening_weight=0."
        )
