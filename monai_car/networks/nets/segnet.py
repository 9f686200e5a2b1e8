"""F for LIDC: the SegNet encoder-decoder (Badrinarayanan et al., 2017) with a softmax output."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from monai_car.networks.blocks import check_spatial_dims, conv_stack
from monai_car.networks.utils import check_network_input

__all__ = ["CalibrationSegNet"]


class CalibrationSegNet(nn.Module):
    """SegNet: a VGG-style encoder with batch norm whose max-pool indices are reused by the decoder's unpooling.

    The defaults are VGG16-BN's 13 convolutions (widths 64-128-256-512-512, 2-2-3-3-3 convolutions per block), the
    SegNet configuration used for the calibration network F on LIDC. The decoder mirrors the encoder; its last block
    ends in a 3x3 convolution to ``out_channels`` class logits, and :meth:`forward` applies a softmax.

    Args:
        spatial_dims: 2 (slices) or 3 (volumes).
        in_channels: image channels ``C``.
        out_channels: classes ``K`` (2 for lesion / background).
        channels: encoder widths, one per pooling level.
        convs_per_block: convolutions per encoder (and decoder) block, one entry per level.
        negative_slope: LeakyReLU slope (default 0.2; 0 gives SegNet's ReLU). With ReLU, the head sees only
            non-negative features and F can fall into a solution where the lesion is coded by *absent* features:
            the head's foreground-minus-background weights all turn negative, its bias difference stays at 0, and
            the foreground probability can never exceed 0.5 (seen on the LIDC demo: F at most 0.50 where all four
            graders marked a nodule, with ReLU at lr 2e-4 and 1e-3; 0.99 with slope 0.2).
        dropout: dropout after each activation (0 disables it, as in SegNet).

    Shapes:
        input ``(B, C, *spatial)``; output ``(B, K, *spatial)`` probabilities summing to 1 over ``K``. Any spatial size
        works: unpooling restores each pre-pooling size, odd sizes included.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (64, 128, 256, 512, 512),
        convs_per_block: Sequence[int] = (2, 2, 3, 3, 3),
        negative_slope: float = 0.2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if len(channels) != len(convs_per_block) or len(channels) == 0:
            raise ValueError(
                f"channels {tuple(channels)} and convs_per_block {tuple(convs_per_block)} "
                "must be non-empty and of equal length."
            )
        if in_channels < 1 or out_channels < 2:
            raise ValueError(
                f"need in_channels >= 1 and out_channels >= 2 (softmax classes), got {in_channels}, {out_channels}."
            )
        if any(n < 1 for n in convs_per_block):
            raise ValueError(f"every block needs at least one convolution, got {tuple(convs_per_block)}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        kwargs = {"negative_slope": negative_slope, "dropout": dropout}

        self.encoders = nn.ModuleList()
        prev = in_channels
        for width, n in zip(channels, convs_per_block):
            self.encoders.append(conv_stack(spatial_dims, [prev] + [width] * n, **kwargs))
            prev = width

        # decoder level i mirrors encoder level i: widths go back from channels[i] to channels[i-1]
        self.decoders = nn.ModuleList()
        for i in reversed(range(len(channels))):
            width, n = channels[i], convs_per_block[i]
            target = channels[i - 1] if i > 0 else channels[0]
            widths = [width] * n + [target]
            if i == 0:
                widths = [width] * n  # the last block keeps its width; the head maps to classes
            self.decoders.append(conv_stack(spatial_dims, widths, **kwargs) if len(widths) > 1 else nn.Identity())
        self.head = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, kernel_size=3, padding=1)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2, return_indices=True)
        self.unpool = _max_unpool(spatial_dims)(kernel_size=2, stride=2)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K, *spatial)`` for images ``(B, C, *spatial)``."""
        check_network_input(x, self.in_channels, self.spatial_dims, type(self).__name__)
        indices: list[torch.Tensor] = []
        sizes: list[torch.Size] = []
        h = x
        for encoder in self.encoders:
            h = encoder(h)
            sizes.append(h.shape)
            h, idx = self.pool(h)
            indices.append(idx)
        for decoder, idx, size in zip(self.decoders, reversed(indices), reversed(sizes)):
            h = self.unpool(h, idx, output_size=size)
            h = decoder(h)
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, K, *spatial)``."""
        return torch.softmax(self.forward_logits(x), dim=1)


def _max_unpool(spatial_dims: int) -> type[nn.MaxUnpool1d | nn.MaxUnpool2d | nn.MaxUnpool3d]:
    """``MaxUnpool{1,2,3}d``, in the manner of MONAI's layer factories (whose ``Pool`` has no max-unpooling)."""
    return (nn.MaxUnpool1d, nn.MaxUnpool2d, nn.MaxUnpool3d)[spatial_dims - 1]
