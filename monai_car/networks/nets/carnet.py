"""CARNet: the calibration net F and the refinement generator G as one module."""

from __future__ import annotations

import torch
from torch import nn

from .protocols import MultiSampleRefiner

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
        shared_encoder: let :meth:`sample` compute G's noise-free work once per image when G is a
            :class:`~monai_car.networks.nets.MultiSampleRefiner` (as
            :class:`~monai_car.networks.nets.RefinementUNet` is) in eval mode (see
            :meth:`~monai_car.networks.nets.RefinementUNet.forward_multi`: the same samples up to float rounding,
            2-4x faster on CPU). ``False`` forces one full G pass per draw; training mode always uses it. Also an
            attribute, which can be changed after construction.

    Example::

        net = CARNet(CalibrationSegNet(), RefinementUNet(in_channels=3))
        probs = net(x)                                   # (B, 2, H, W)
        samples = net.sample(x, 16, generator=torch.Generator().manual_seed(0))  # (B, 16, 2, H, W)
    """

    #: Rows per decoder pass of :meth:`sample`'s shared path on CPU when no ``chunk_size`` is given (measured best of
    #: 2-32 at 128x128 with 2 threads, see BENCHMARKS.md).
    cpu_chunk_size: int = 4

    def __init__(
        self,
        calibration_net: nn.Module,
        refinement_net: nn.Module,
        num_classes: int | None = None,
        shared_encoder: bool = True,
    ) -> None:
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
        self.shared_encoder = bool(shared_encoder)

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
        share_in_training: bool = False,
    ) -> torch.Tensor:
        """Draw ``num_samples`` label-map probabilities per image from G in one batched pass.

        The ``B * S`` inputs are stacked along the batch axis and go through G together (or in chunks of at most
        ``chunk_size`` rows to bound memory; note that in training mode batch norm then sees each chunk separately).
        When G is a :class:`~monai_car.networks.nets.MultiSampleRefiner` (as
        :class:`~monai_car.networks.nets.RefinementUNet` is) in eval mode (and ``shared_encoder`` is on), its
        noise-free work (encoder, bottleneck, skip connections) runs once per image and only the noise-dependent
        decoder once per row, through its ``forward_multi``
        (:meth:`~monai_car.networks.nets.RefinementUNet.forward_multi`): the same numbers up to float rounding
        (~1e-7), several times fewer FLOPs. In training mode every row is a full G pass, with
        its own dropout masks.

        Args:
            x: images ``(B, C, *spatial)``.
            num_samples: ``S`` draws per image.
            generator: source of the noise, for reproducible draws; the global RNG when ``None``.
            chunk_size: the most rows of ``B * S`` per G pass; all in one pass when ``None``, except on the shared
                path on CPU, which then decodes :attr:`cpu_chunk_size` rows per pass (small passes stay in cache:
                1.4-2.3x faster than one pass at 128x128 on a 2-core CPU, the same numbers).
            calibration_probs: F's probabilities ``(B, K, *spatial)`` if already computed (F is run otherwise).
            noise: explicit noise ``(B, S, noise_dim)`` instead of drawing it.
            share_in_training: take the shared path in training mode too (the stage-2 trainer's ``shared_encoder``):
                one dropout mask per image in G's noise-free part, see
                :meth:`~monai_car.networks.nets.RefinementUNet.forward_multi`. ``chunk_size`` then applies as given
                (no CPU default chunking: batch norm would normalise each chunk separately).

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
        if probs.shape[1] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} probability channels, got {probs.shape[1]}.")
        if noise is None:
            z = self.sample_noise(b * s, generator=generator, device=x.device, dtype=x.dtype)
        else:
            if noise.shape != (b, s, self.noise_dim):
                raise ValueError(f"noise must have shape {(b, s, self.noise_dim)}, got {tuple(noise.shape)}.")
            z = noise.reshape(b * s, self.noise_dim).to(device=x.device, dtype=x.dtype)
        training = self.refinement_net.training
        if self._shares_noise_free_work(share_in_training):
            if chunk_size is None and x.device.type == "cpu" and not training:
                chunk_size = self.cpu_chunk_size
            g_in = torch.cat([x, probs.detach()], dim=1)
            return self.refinement_net.forward_multi(
                g_in, z.view(b, s, self.noise_dim), chunk_size=chunk_size, allow_training=training
            )
        xs = x.unsqueeze(1).expand(b, s, *x.shape[1:]).reshape(b * s, *x.shape[1:])
        ps = probs.unsqueeze(1).expand(b, s, *probs.shape[1:]).reshape(b * s, *probs.shape[1:])
        step = b * s if chunk_size is None else int(chunk_size)
        out = [self.refine(xs[i : i + step], ps[i : i + step], z[i : i + step]) for i in range(0, b * s, step)]
        samples = out[0] if len(out) == 1 else torch.cat(out, dim=0)
        return samples.reshape(b, s, *samples.shape[1:])

    def _shares_noise_free_work(self, in_training: bool = False) -> bool:
        """Whether :meth:`sample` takes G's shared path: G's class is a :class:`MultiSampleRefiner` (checked on the
        class, so a wrapper that forwards attribute look-ups, like ``torch.compile``'s module, keeps the plain path),
        G is in eval mode (or in training mode with ``in_training``) and says its ``forward_multi`` matches its
        forward (a RefinementUNet subclass that changes the forward does not, unless it adapts ``forward_multi``)."""
        g = self.refinement_net
        if not (self.shared_encoder and issubclass(type(g), MultiSampleRefiner)) or (g.training and not in_training):
            return False
        return bool(g.forward_multi_matches_forward())
