"""Noise injection for the refinement generator (adaptive-instance-norm-like affine modulation)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["NoiseInjection"]


class NoiseInjection(nn.Module):
    """Modulates feature maps with a noise vector: ``(h + r) * (s + 1)``.

    Two linear maps project the noise ``z`` to a per-channel residual ``r`` and scale ``s``, broadcast over the
    spatial dimensions. With zero-initialised maps the block starts as the identity.

    Args:
        noise_dim: length of the noise vector ``z``.
        channels: number of feature channels ``C`` of ``h``.
        zero_init: initialise both linear maps to zero so that the block starts as the identity.

    Shapes:
        ``h``: ``(B, C, *spatial)``; ``z``: ``(B, noise_dim)``; output: ``(B, C, *spatial)``.
    """

    def __init__(self, noise_dim: int, channels: int, zero_init: bool = False) -> None:
        super().__init__()
        if noise_dim < 1 or channels < 1:
            raise ValueError(f"noise_dim and channels must be positive, got {noise_dim} and {channels}.")
        self.noise_dim = noise_dim
        self.channels = channels
        self.to_scale = nn.Linear(noise_dim, channels)
        self.to_residual = nn.Linear(noise_dim, channels)
        if zero_init:
            for layer in (self.to_scale, self.to_residual):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if h.ndim < 3 or h.shape[1] != self.channels:
            raise ValueError(f"expected h of shape (B, {self.channels}, *spatial), got {tuple(h.shape)}.")
        if z.ndim != 2 or z.shape[1] != self.noise_dim or z.shape[0] != h.shape[0]:
            raise ValueError(f"expected z of shape ({h.shape[0]}, {self.noise_dim}), got {tuple(z.shape)}.")
        view = (h.shape[0], self.channels) + (1,) * (h.ndim - 2)
        scale = self.to_scale(z).view(view)
        residual = self.to_residual(z).view(view)
        return (h + residual) * (scale + 1)
