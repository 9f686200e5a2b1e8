"""Distributed helpers for the engines: rank / world size, DDP wrapping, reductions (no-ops without a process group)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "all_reduce_mean",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "unwrap_module",
    "wrap_ddp",
]


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Whether this is rank 0 (always true without a process group)."""
    return get_rank() == 0


def init_distributed(backend: str | None = None, device_type: str | None = None) -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment and return this rank's device.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` (set by
    ``torchrun --nproc_per_node N``). Already initialised: returns the device without initialising again.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; default ``"nccl"`` when CUDA is available, else ``"gloo"``.
        device_type: ``"cuda"`` or ``"cpu"``; default ``"cuda"`` when available.

    Returns:
        ``cuda:LOCAL_RANK`` (made the current device) or ``cpu``.

    Raises:
        RuntimeError: when the torchrun environment variables are missing.
    """
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing and not dist.is_initialized():
        raise RuntimeError(
            f"init_distributed needs the torchrun environment, but {missing} are not set: launch with "
            "`torchrun --nproc_per_node N ...` (or `python -m torch.distributed.run`)."
        )
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type not in ("cuda", "cpu"):
        raise ValueError(f"device_type must be 'cuda' or 'cpu', got {device_type!r}.")
    if device_type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device_type='cuda' was requested but CUDA is not available; use device_type='cpu'.")
    backend = backend or ("nccl" if device_type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if device_type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def unwrap_module(module: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` wrappers (``module`` itself otherwise)."""
    while isinstance(module, (DistributedDataParallel, nn.DataParallel)):
        module = module.module
    return module


def wrap_ddp(module: nn.Module, device: torch.device | str, ddp_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Wrap ``module`` in ``DistributedDataParallel`` when a multi-process group is running.

    The module is returned unchanged without a process group, when it is already wrapped, or when it has no
    trainable parameter. On CUDA ``device_ids`` defaults to ``[device]``.

    Args:
        module: the network, already on ``device``.
        device: this rank's device.
        ddp_kwargs: further ``DistributedDataParallel`` arguments (e.g. ``find_unused_parameters``).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"wrap_ddp expects a torch.nn.Module, got {type(module).__name__}.")
    if not is_distributed() or isinstance(module, DistributedDataParallel):
        return module
    if not any(p.requires_grad for p in module.parameters()):
        return module
    kwargs = dict(ddp_kwargs or {})
    device = torch.device(device)
    if device.type == "cuda" and "device_ids" not in kwargs:
        kwargs["device_ids"] = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(module, **kwargs)


def all_reduce_mean(value: float | torch.Tensor, device: torch.device | str | None = None) -> float:
    """Mean of a scalar over all ranks (the value itself without a process group).

    Args:
        value: a python number or a one-element tensor.
        device: where to put the reduction tensor (the backend's device: CUDA for NCCL).
    """
    t = torch.as_tensor(value, dtype=torch.float64, device=device).detach().reshape(-1)
    if t.numel() != 1:
        raise ValueError(f"all_reduce_mean expects a scalar, got a tensor of shape {tuple(t.shape)}.")
    if not is_distributed():
        return float(t.item())
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / dist.get_world_size()
