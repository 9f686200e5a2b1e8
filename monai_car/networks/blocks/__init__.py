from __future__ import annotations

from .conv_blocks import ConvNormActDropout, check_spatial_dims, conv_stack, match_spatial_size
from .noise_injection import NoiseInjection

__all__ = ["ConvNormActDropout", "NoiseInjection", "check_spatial_dims", "conv_stack", "match_spatial_size"]
