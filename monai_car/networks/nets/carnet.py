"""CARNet: the calibration net F and the refinement generator G as one module."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CARNet"]


class CARNet(nn.Module):
    """Calibrated Adversarial Refinement network: ``forward`` runs F, :meth:`sample` draws label maps from G.

    This is the one module a bundle saves as ``models/model.pt``; the discriminator is a training-time companion and
    is not part of it.

    Args:
        calibration_net: F, ``(B, C, *spatial) -> (B, K, *spatial)`` probabilities.
        refinement_net: G, ``((B, C + K, *spatial), (B, noise_dim)) -> (B, K, *spatial)`` probabilities; must have a
            ``noise_dim`` attribute (as :class:`~monai_car.networks.nets.RefinementUNet` has).
        num_classes: ``K``; read from ``calibration_net.out_channels`` when omitted.

    Example::

        net = CARNet(CalibrationSegNet(), RefinementUNet(in_channels=3))
        probs = net(x)                                   # (B, 2, H, W)
        samples = net.sample(x, 16, generator=torch.Generator().manual_seed(0))  # (B, 16, 2, H, W)
    """

    def __init__(self, calibration_net: nn.Module, refinement_net: nn.Module, num_classes: int | None = None) -> None:
        super().__init__()
        if not hasattr(refinement_net, "noise_dim"):
            raise TypeError(f"refinement_net ({type(refinement_net).__name__}) must define a `noise_dim` attribute.")
        self.calibration_net = calibration_net
        self.refinement_net = refinement_net
        self.noise_dim = int(refinement_net.noise_dim)
        k = num_classes if num_classes is not None else getattr(calibration_net, "out_channels", None)
        if k is None or int(k) < 2:
            raise ValueError(f"num_classes must be >= 2 (given or as calibration_net.out_channels), got {k}.")
        self.num_classes = int(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """F's class probabilities ``(B, K, *spatial)`` for images ``(B, C, *spatial)``."""
        return self.calibration_net(x)

    def sample_noise(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """``n`` standard-normal noise vectors ``(n, noise_dim)``, drawn on the generator's device, then moved."""
        if n < 1:
            raise ValueError(f"number of noise vectors must be positive, got {n}.")
        draw_device = generator.device if generator is not None else device
        z = torch.randn((n, self.noise_dim), generator=generator, device=draw_device, dtype=dtype)
        return z.to(device) if device is not None else z

    def refine(self, x: torch.Tensor, probs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """One G pass: ``G(concat(x, probs.detach()), z)``.

        Args:
            x: images ``(N, C, *spatial)``.
            probs: F's probabilities ``(N, K, *spatial)``; detached, so no gradient reaches F through G.
            z: noise ``(N, noise_dim)``.

        Returns:
            G's probabilities ``(N, K, *spatial)``.
        """
        if x.shape[0] != probs.shape[0] or x.shape[2:] != probs.shape[2:]:
            raise ValueError(
                f"image {tuple(x.shape)} and probabilities {tuple(probs.shape)} disagree in batch or spatial size."
            )
        if probs.shape[1] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} probability channels, got {probs.shape[1]}.")
        return self.refinement_net(torch.cat([x, probs.detach()], dim=1), z)

    def sample(
        self,
        x: torch.Tensor,
        num_samples: int,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
        calibration_probs: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw ``num_samples`` label-map probabilities per image from G in one batched pass.

        The ``B * S`` inputs are stacked along the batch axis and go through G together (or in chunks of at most
        ``chunk_size`` rows to bound memory; note that in training mode batch norm then sees each chunk separately).

        Args:
            x: images ``(B, C, *spatial)``.
            num_samples: ``S`` draws per image.
            generator: source of the noise, for reproducible draws; the global RNG when ``None``.
            chunk_size: the most rows of ``B * S`` per G pass; all in one pass when ``None``.
            calibration_probs: F's probabilities ``(B, K, *spatial)`` if already computed (F is run otherwise).
            noise: explicit noise ``(B, S, noise_dim)`` instead of drawing it.

        Returns:
            ``(B, S, K, *spatial)`` probabilities; sample ``s`` of image ``b`` uses noise row ``b * S + s``.
        """
        if not isinstance(x, torch.Tensor) or x.ndim < 3:
            raise ValueError(f"x must be a tensor (B, C, *spatial), got {getattr(x, 'shape', type(x))}.")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}.")
        if chunk_size is not None and int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be positive or None, got {chunk_size}.")
        b, s = x.shape[0], int(num_samples)
        probs = self.calibration_net(x) if calibration_probs is None else calibration_probs
        if probs.shape[0] != b or probs.shape[2:] != x.shape[2:]:
            raise ValueError(f"calibration_probs {tuple(probs.shape)} does not match images {tuple(x.shape)}.")
        if noise is None:
            z = self.sample_noise(b * s, generator=generator, device=x.device, dtype=x.dtype)
        else:
            if noise.shape != (b, s, self.noise_dim):
                raise ValueError(f"noise must have shape {(b, s, self.noise_dim)}, got {tuple(noise.shape)}.")
            z = noise.reshape(b * s, self.noise_dim).to(device=x.device, dtype=x.dtype)
        xs = x.unsqueeze(1).expand(b, s, *x.shape[1:]).reshape(b * s, *x.shape[1:])
        ps = probs.unsqueeze(1).expand(b, s, *probs.shape[1:]).reshape(b * s, *probs.shape[1:])
        step = b * s if chunk_size is None else int(chunk_size)
        out = [self.refine(xs[i : i + step], ps[i : i + step], z[i : i + step]) for i in range(0, b * s, step)]
        samples = out[0] if len(out) == 1 else torch.cat(out, dim=0)
        return samples.reshape(b, s, *samples.shape[1:])
