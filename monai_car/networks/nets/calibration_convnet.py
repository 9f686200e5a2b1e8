"""F for Cityscapes: five conv blocks over the image and a black-box model's one-hot prediction."""

from __future__ import annotations

import os

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from monai_car.networks.blocks import check_spatial_dims, conv_stack
from monai_car.networks.utils import check_network_input

from .black_box import BlackBoxOneHot

__all__ = ["CalibrationConvNet"]


class CalibrationConvNet(nn.Module):
    """The small calibration network: 5 blocks of conv3x3 + BN + LeakyReLU + Dropout(0.1), then a 1x1 head and softmax.

    Its input is the image concatenated with a black-box segmenter's one-hot prediction, so that F learns how often
    each predicted class is really that class (the calibrated distribution CAR refines). The black box comes in one
    of three forms:

    - a folder of precomputed prediction maps: the 2D transforms concatenate their one-hot channels to the image
      (``concat_blackbox=True``), and F takes that tensor (``in_channels`` = image + one-hot channels);
    - a torch module, or the path of a MONAI bundle (``black_box=``): F runs it frozen on the image
      (:class:`~monai_car.networks.nets.BlackBoxOneHot`) and concatenates its one-hot prediction itself; F then takes
      the image alone (``in_channels`` = image channels).

    Args:
        spatial_dims: 2 or 3.
        in_channels: the channels of F's input: image plus one-hot channels (e.g. 3 + 25 on the modified Cityscapes)
            without ``black_box``, the image's channels with it.
        out_channels: classes ``K``.
        hidden_channels: width of the five blocks.
        num_blocks: number of conv blocks (5 in the paper).
        negative_slope: LeakyReLU slope.
        dropout: dropout probability after each block.
        black_box: a frozen segmenter run on the image (a module or a bundle folder), or None (its prediction is
            already part of the input).
        black_box_classes: the one-hot width of ``black_box``'s prediction (default ``out_channels``).

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
        black_box: nn.Module | str | os.PathLike | None = None,
        black_box_classes: int | None = None,
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
        self.black_box = (
            None
            if black_box is None
            else BlackBoxOneHot(black_box, out_channels if black_box_classes is None else black_box_classes)
        )
        extra = 0 if self.black_box is None else self.black_box.num_classes
        widths = [in_channels + extra] + [hidden_channels] * num_blocks
        self.blocks = conv_stack(spatial_dims, widths, negative_slope=negative_slope, dropout=dropout)
        self.head = Conv[Conv.CONV, spatial_dims](hidden_channels, out_channels, kernel_size=1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K, *spatial)``."""
        check_network_input(x, self.in_channels, self.spatial_dims, type(self).__name__)
        if self.black_box is not None:
            x = torch.cat([x, self.black_box(x)], dim=1)
        return self.head(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, K, *spatial)``."""
        return torch.softmax(self.forward_logits(x), dim=1)
