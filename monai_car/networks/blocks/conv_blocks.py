"""Convolution blocks shared by the CAR networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn
from torch.nn import functional as F

__all__ = ["ConvNormActDropout", "conv_stack", "match_spatial_size", "check_spatial_dims"]


def check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` if it is 2 or 3, else raise a ``ValueError``."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 (slices) or 3 (volumes), got {spatial_dims}.")
    return spatial_dims


class ConvNormActDropout(Convolution):
    """``conv (3x3[x3]) -> batch norm -> LeakyReLU -> dropout``, MONAI's ``Convolution`` with ``adn_ordering="NAD"``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: convolution kernel size (padding keeps the spatial size at stride 1).
        negative_slope: LeakyReLU slope.
        dropout: dropout probability (0 disables it).
        norm: apply batch norm.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        negative_slope: float = 0.2,
        dropout: float = 0.1,
        norm: bool = True,
    ) -> None:
        super().__init__(
            spatial_dims=check_spatial_dims(spatial_dims),
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            act=("leakyrelu", {"negative_slope": negative_slope, "inplace": True}),
            norm="batch" if norm else None,
            dropout=dropout if dropout > 0 else None,
            adn_ordering="NAD",
        )


def conv_stack(
    spatial_dims: int,
    channels: Sequence[int],
    negative_slope: float = 0.2,
    dropout: float = 0.1,
    norm: bool = True,
) -> nn.Sequential:
    """A sequence of :class:`ConvNormActDropout` blocks going through ``channels[0] -> channels[1] -> ...``."""
    if len(channels) < 2:
        raise ValueError(f"conv_stack needs at least an input and an output width, got {tuple(channels)}.")
    return nn.Sequential(
        *[
            ConvNormActDropout(spatial_dims, cin, cout, negative_slope=negative_slope, dropout=dropout, norm=norm)
            for cin, cout in zip(channels[:-1], channels[1:])
        ]
    )


def match_spatial_size(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad or crop ``x`` (B, C, *spatial) at the end of each spatial axis to ``size``.

    Used after a stride-2 upsampling when the skip connection had an odd size.
    """
    spatial = x.shape[2:]
    if tuple(spatial) == tuple(size):
        return x
    pad: list[int] = []
    for have, want in reversed(list(zip(spatial, size))):
        pad.extend([0, max(want - have, 0)])
    x = F.pad(x, pad)
    slices = (slice(None), slice(None)) + tuple(slice(0, s) for s in size)
    return x[slices]
