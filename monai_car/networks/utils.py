"""Helpers shared by the CAR networks."""

from __future__ import annotations

import torch

__all__ = ["check_network_input"]


def check_network_input(x: torch.Tensor, in_channels: int, spatial_dims: int, name: str) -> None:
    """Check that ``x`` is a floating-point tensor ``(B, in_channels, *spatial)`` with ``spatial_dims`` spatial dims.

    Args:
        x: the network's input.
        in_channels: the channels the network was built for.
        spatial_dims: 2 or 3.
        name: the network's name, for the message (e.g. ``type(self).__name__``).

    Raises:
        TypeError: when ``x`` is not a tensor, or not floating point.
        ValueError: when ``x`` has another rank or number of channels; the message names the network.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != spatial_dims + 2 or x.shape[1] != in_channels:
        raise ValueError(
            f"{name} expects input of shape (B, {in_channels}, *{spatial_dims} spatial dims), got {tuple(x.shape)}."
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} expects a floating point input, got {x.dtype}.")
