"""Adapters that route a network's other entry points through ``DistributedDataParallel``'s ``forward``.

DDP synchronises gradients only for calls of its own ``forward``: calling ``ddp.module.forward_logits`` or
``ddp.module.forward_multi`` would silently skip the all-reduce and let the ranks drift apart. These adapters give
each such entry point a ``forward`` that DDP can wrap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from monai_car.utils.distributed import wrap_ddp

__all__ = ["DistributedRefiner", "LogitsForward"]


class LogitsForward(nn.Module):
    """``forward = net.forward_logits`` so that a network's logits pass through ``DistributedDataParallel``.

    Wrapping this adapter (instead of calling ``ddp.module.forward_logits``) keeps the logits path synchronised.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(net, "forward_logits", None)):
            raise TypeError(f"{type(net).__name__} has no forward_logits(); use the network itself.")
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_logits(x)


class _RefinerEntryPoints(nn.Module):
    """One ``forward`` for both of G's entry points (what DDP wraps): ``net(x, z)`` or, with ``multi=True``,
    ``net.forward_multi(x, z, chunk_size, allow_training)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        multi: bool = False,
        chunk_size: int | None = None,
        allow_training: bool = False,
    ) -> torch.Tensor:
        if multi:
            return self.net.forward_multi(x, z, chunk_size=chunk_size, allow_training=allow_training)
        return self.net(x, z)


class DistributedRefiner(nn.Module):
    """A refinement generator G under ``DistributedDataParallel`` whose shared path stays synchronised.

    It offers what :class:`~monai_car.networks.nets.CARNet` uses of G -- ``forward(x, z)``, ``forward_multi`` (the
    noise-free work once per input, :class:`~monai_car.networks.nets.MultiSampleRefiner`),
    ``forward_multi_matches_forward`` and ``noise_dim`` -- and sends both calls through one DDP ``forward``, so the
    stage-2 trainer's ``shared_encoder`` path all-reduces G's gradients like the per-sample path does. Without a
    process group :func:`~monai_car.utils.distributed.wrap_ddp` leaves the module unwrapped and this adapter is a
    plain pass-through.

    Args:
        net: G, a :class:`~monai_car.networks.nets.MultiSampleRefiner` (e.g. a RefinementUNet), already on ``device``.
        device: this rank's device.
        ddp_kwargs: further ``DistributedDataParallel`` arguments.

    Raises:
        TypeError: ``net`` is not an ``nn.Module`` with ``forward_multi`` and ``forward_multi_matches_forward``.
    """

    def __init__(self, net: nn.Module, device: torch.device | str, ddp_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        missing = [n for n in ("forward_multi", "forward_multi_matches_forward") if not callable(getattr(net, n, None))]
        if not isinstance(net, nn.Module) or missing:
            raise TypeError(
                f"DistributedRefiner needs a torch.nn.Module with forward_multi and forward_multi_matches_forward "
                f"(a MultiSampleRefiner such as RefinementUNet); {type(net).__name__} lacks {missing or 'nn.Module'}."
            )
        self.ddp = wrap_ddp(_RefinerEntryPoints(net), device, ddp_kwargs)
        self.generator = net
        self.noise_dim = getattr(net, "noise_dim", None)
        self.train(net.training)  # CARNet reads the adapter's mode; set it with .train()/.eval() on the adapter

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``G(x, z)``: probabilities ``(B, K, *spatial)`` of inputs ``(B, C + K, *spatial)`` and noise
        ``(B, noise_dim)``."""
        return self.ddp(x, z)

    def forward_multi(
        self, x: torch.Tensor, z: torch.Tensor, chunk_size: int | None = None, allow_training: bool = False
    ) -> torch.Tensor:
        """G's ``forward_multi`` through DDP: ``(B, S, K, *spatial)`` from ``x`` ``(B, C + K, *spatial)`` and ``z``
        ``(B, S, noise_dim)``."""
        return self.ddp(x, z, multi=True, chunk_size=chunk_size, allow_training=allow_training)

    def forward_multi_matches_forward(self) -> bool:
        """G's own answer (see :class:`~monai_car.networks.nets.MultiSampleRefiner`)."""
        return bool(self.generator.forward_multi_matches_forward())

    def no_sync(self) -> contextlib.AbstractContextManager:
        """DDP's ``no_sync`` (gradients accumulate locally; the next synchronised backward all-reduces them), or a
        null context without a process group."""
        no_sync = getattr(self.ddp, "no_sync", None)
        return no_sync() if no_sync is not None else contextlib.nullcontext()
