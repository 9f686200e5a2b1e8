"""What a refinement generator G offers :class:`~monai_car.networks.nets.CARNet` beyond ``forward(x, z)``."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["MultiSampleRefiner"]


@runtime_checkable
class MultiSampleRefiner(Protocol):
    """A G that draws ``S`` samples per input with its noise-free work done once per input.

    :meth:`CARNet.sample <monai_car.networks.nets.CARNet.sample>` calls :meth:`forward_multi` instead of one
    ``forward`` per draw when G's *class* has both methods (a wrapper that only forwards attribute look-ups, such as
    ``torch.compile``'s module, does not count) and :meth:`forward_multi_matches_forward` is true.
    :class:`~monai_car.networks.nets.RefinementUNet` is one.
    """

    def forward_multi(
        self, x: torch.Tensor, z: torch.Tensor, chunk_size: int | None = None, allow_training: bool = False
    ) -> torch.Tensor:
        """Probabilities ``(B, S, K, *spatial)`` of inputs ``(B, C + K, *spatial)`` and noise ``(B, S, noise_dim)``.

        In eval mode row ``[b, s]`` must equal ``forward(x[b:b+1], z[b, s:s+1])[0]`` up to float rounding; training
        mode is allowed only with ``allow_training=True`` (a deliberate change of the model, e.g. dropout masks
        shared between an input's draws). ``chunk_size`` bounds the rows per pass (all at once when ``None``).
        """
        ...

    def forward_multi_matches_forward(self) -> bool:
        """Whether :meth:`forward_multi` computes this object's ``forward`` (False, e.g., for a subclass that changed
        ``forward`` but not ``forward_multi``); :meth:`CARNet.sample` takes the plain path when it does not."""
        ...
