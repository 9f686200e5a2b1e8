"""G: the refinement U-Net that turns F's probabilities and a noise draw into one label map."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_car.networks.blocks import NoiseInjection, check_spatial_dims, conv_stack, match_spatial_size

from .segnet import _check_input

__all__ = ["RefinementUNet"]


class RefinementUNet(nn.Module):
    """U-Net with noise injected into every upsampling block (the CAR refinement generator G).

    Four down and four up blocks, base width 32 doubled per level; every block is ``convs_per_block`` times
    conv3x3 + BN + LeakyReLU(0.2) + Dropout(0.1). Downsampling is a 2x max-pool, upsampling a stride-2 transposed
    convolution followed by concatenation with the skip connection. After each upsampling block a
    :class:`~monai_car.networks.blocks.NoiseInjection` modulates the features with the noise ``z``:
    ``(h + r(z)) * (s(z) + 1)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels plus F's ``K`` probability channels.
        out_channels: classes ``K``.
        channels: widths per level, ``len(channels) - 1`` down/up blocks (default 4).
        noise_dim: length of ``z`` (8 on LIDC, 32 on Cityscapes).
        convs_per_block: convolutions per block (the paper: one).
        negative_slope: LeakyReLU slope.
        dropout: dropout probability.

    Shapes:
        ``x``: ``(B, in_channels, *spatial)``, ``z``: ``(B, noise_dim)``; output ``(B, K, *spatial)`` probabilities.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 2,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        noise_dim: int = 8,
        convs_per_block: int = 1,
        negative_slope: float = 0.2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if len(channels) < 2:
            raise ValueError(f"channels needs at least two levels, got {tuple(channels)}.")
        if noise_dim < 1 or convs_per_block < 1 or in_channels < 1 or out_channels < 2:
            raise ValueError(
                "need noise_dim >= 1, convs_per_block >= 1, in_channels >= 1 and out_channels >= 2, got "
                f"{noise_dim}, {convs_per_block}, {in_channels}, {out_channels}."
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.noise_dim = noise_dim
        kwargs = {"negative_slope": negative_slope, "dropout": dropout}
        self.stem = conv_stack(spatial_dims, [in_channels] + [channels[0]] * convs_per_block, **kwargs)
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        self.pool = pool(kernel_size=2, stride=2)
        self.down = nn.ModuleList(
            conv_stack(spatial_dims, [cin] + [cout] * convs_per_block, **kwargs)
            for cin, cout in zip(channels[:-1], channels[1:])
        )
        transpose = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        self.noise = nn.ModuleList()
        for cin, cout in zip(reversed(channels[1:]), reversed(channels[:-1])):
            self.upsample.append(transpose(cin, cout, kernel_size=2, stride=2))
            self.up.append(conv_stack(spatial_dims, [2 * cout] + [cout] * convs_per_block, **kwargs))
            self.noise.append(NoiseInjection(noise_dim, cout))
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.head = conv(channels[0], out_channels, kernel_size=1)

    def forward_logits(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K, *spatial)`` for inputs ``(B, C + K, *spatial)`` and noise ``(B, noise_dim)``."""
        _check_input(x, self.in_channels, self.spatial_dims, type(self).__name__)
        if z.ndim != 2 or z.shape != (x.shape[0], self.noise_dim):
            raise ValueError(f"expected noise z of shape ({x.shape[0]}, {self.noise_dim}), got {tuple(z.shape)}.")
        h = self.stem(x)
        skips = [h]
        for block in self.down:
            h = block(self.pool(h))
            skips.append(h)
        skips.pop()  # the bottleneck output is h itself
        for upsample, block, noise in zip(self.upsample, self.up, self.noise):
            skip = skips.pop()
            h = match_spatial_size(upsample(h), skip.shape[2:])
            h = noise(block(torch.cat([h, skip], dim=1)), z)
        return self.head(h)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, K, *spatial)``."""
        return torch.softmax(self.forward_logits(x, z), dim=1)
