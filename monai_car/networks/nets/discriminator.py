"""D: a DC-GAN-style discriminator without batch norm, conditioned on the image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from monai_car.networks.blocks import check_spatial_dims
from monai_car.networks.utils import check_network_input

__all__ = ["CARDiscriminator"]


class CARDiscriminator(nn.Module):
    """Strided 4x4 convolutions with LeakyReLU(0.2) and no normalisation, ending in a 1-channel convolution.

    The input is the image concatenated with a label map (one-hot grader mask or G's soft sample). With
    ``patch=False`` the final logit map is averaged into one logit per image; with ``patch=True`` the map itself
    is returned (a PatchGAN-style score per receptive field). No layer depends on the input size.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels plus ``K`` label channels.
        channels: widths of the strided convolutions (each halves the spatial size).
        negative_slope: LeakyReLU slope.
        patch: return per-patch logits instead of one per image.

    Shapes:
        input ``(B, in_channels, *spatial)``; output ``(B, 1)`` or, with ``patch=True``, ``(B, 1, *patch_spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        channels: Sequence[int] = (64, 128, 256, 512),
        negative_slope: float = 0.2,
        patch: bool = False,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if len(channels) < 1 or in_channels < 1:
            raise ValueError(
                f"need at least one conv width and in_channels >= 1, got {tuple(channels)}, {in_channels}."
            )
        self.in_channels = in_channels
        self.patch = patch
        conv = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = []
        prev = in_channels
        for width in channels:
            layers.append(conv(prev, width, kernel_size=4, stride=2, padding=1))
            layers.append(nn.LeakyReLU(negative_slope, inplace=True))
            prev = width
        layers.append(conv(prev, 1, kernel_size=3, stride=1, padding=1))
        self.net = nn.Sequential(*layers)
        self.min_size = 2 ** len(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: ``(B, 1)`` per image or ``(B, 1, *patch_spatial)`` per patch."""
        check_network_input(x, self.in_channels, self.spatial_dims, type(self).__name__)
        if min(x.shape[2:]) < self.min_size:
            raise ValueError(
                f"CARDiscriminator with {len(self.net) // 2} strided convs needs every spatial size "
                f">= {self.min_size}, "
                f"got {tuple(x.shape[2:])}."
            )
        logits = self.net(x)
        if self.patch:
            return logits
        return logits.flatten(1).mean(dim=1, keepdim=True)
