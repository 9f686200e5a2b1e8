"""F for Cityscapes: five conv blocks over the image and a black-box model's one-hot prediction."""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from monai_car.networks.blocks import check_spatial_dims, conv_stack
from monai_car.networks.utils import check_network_input

__all__ = ["CalibrationConvNet"]


class CalibrationConvNet(nn.Module):
    """The small calibration network: 5 blocks of conv3x3 + BN + LeakyReLU + Dropout(0.1), then a 1x1 head and softmax.

    Its input is the image concatenated with a black-box segmenter's one-hot prediction, so that F learns how often
    each predicted class is really that class (the calibrated distribution CAR refines).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels plus one-hot channels (e.g. 3 + 25 on the modified Cityscapes).
        out_channels: classes ``K``.
        hidden_channels: width of the five blocks.
        num_blocks: number of conv blocks (5 in the paper).
        negative_slope: LeakyReLU slope.
        dropout: dropout probability after each block.

    Shapes:
        input ``(B, in_channels, *spatial)``; output ``(B, K, *spatial)`` probabilities.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 28,
        out_channels: int = 25,
        hidden_channels: int = 64,
        num_blocks: int = 5,
        negative_slope: float = 0.2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if num_blocks < 1 or hidden_channels < 1 or in_channels < 1 or out_channels < 2:
            raise ValueError(
                "need num_blocks >= 1, hidden_channels >= 1, in_channels >= 1 and out_channels >= 2, got "
                f"{num_blocks}, {hidden_channels}, {in_channels}, {out_channels}."
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        widths = [in_channels] + [hidden_channels] * num_blocks
        self.blocks = conv_stack(spatial_dims, widths, negative_slope=negative_slope, dropout=dropout)
        self.head = Conv[Conv.CONV, spatial_dims](hidden_channels, out_channels, kernel_size=1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K, *spatial)``."""
        check_network_input(x, self.in_channels, self.spatial_dims, type(self).__name__)
        return self.head(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, K, *spatial)``."""
        return torch.softmax(self.forward_logits(x), dim=1)
