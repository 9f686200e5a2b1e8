"""A MONAI ``Inferer`` for a :class:`~monai_car.networks.CARNet`: G's sample mean (or samples, or F) per image.

MONAI tools that run a bundle's ``inferer`` as ``inferer(inputs, network)`` (``SupervisedEvaluator``, MONAI
Label's ``BundleInferTask``, MONAI Deploy) get from a plain ``SimpleInferer`` only ``network(inputs)``: F's
probabilities. :class:`CARSamplingInferer` draws ``num_samples`` samples from G instead and returns their mean
(``(B, K, *spatial)``, the shape a segmentation post-processing such as ``AsDiscreted(argmax=True)`` expects), the
samples themselves, or F's probabilities.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

from monai_car.utils.distributed import unwrap_module
from monai_car.utils.validation import check_positive_int

__all__ = ["CARSamplingInferer", "SAMPLING_OUTPUTS"]

SAMPLING_OUTPUTS = ("sample_mean", "samples", "calibration")
"""What :class:`CARSamplingInferer` returns: G's sample mean ``(B, K, *spatial)``, G's samples
``(B, S, K, *spatial)``, or F's probabilities ``(B, K, *spatial)``."""


class CARSamplingInferer(Inferer):
    """``inferer(inputs, network)``: ``num_samples`` draws of a CARNet's G, reduced as ``output`` says.

    The noise comes from a ``torch.Generator`` seeded with ``seed`` at every call, so one image gives the same
    samples however often (and in whichever batch) it is run; ``seed=None`` uses the global RNG. A ``MetaTensor``
    input's metadata (affine, file name, applied transforms) is carried over to the output, for MONAI's
    ``Invertd`` / ``SaveImaged`` post-processing. The caller sets the grad mode and ``network.eval()``, as for any
    MONAI inferer.

    Args:
        num_samples: ``S``, the samples drawn per image.
        output: one of :data:`SAMPLING_OUTPUTS`.
        seed: seed of the noise of each call, or ``None``.
        chunk_size: passed to :meth:`CARNet.sample` (the most rows of ``B * S`` per G pass).

    Example::

        inferer = CARSamplingInferer(num_samples=16, seed=0)
        mean = inferer(images, carnet)  # (B, 2, H, W): the mean of 16 samples from G
    """

    def __init__(
        self, num_samples: int = 16, output: str = "sample_mean", seed: int | None = 0, chunk_size: int | None = None
    ) -> None:
        super().__init__()
        self.num_samples = check_positive_int(num_samples, "num_samples")
        if output not in SAMPLING_OUTPUTS:
            raise ValueError(f"output must be one of {SAMPLING_OUTPUTS}, got {output!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}.")
        self.output = output
        self.seed = seed
        self.chunk_size = None if chunk_size is None else check_positive_int(chunk_size, "chunk_size")

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Run ``network`` (a CARNet, possibly wrapped in DDP) on ``inputs`` ``(B, C, *spatial)``.

        Raises:
            TypeError: ``inputs`` is not a tensor, or ``network`` has no ``sample`` method (not a CARNet).
            ValueError: ``inputs`` has fewer than 3 dimensions.
        """
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs must be a torch.Tensor (B, C, *spatial), got {type(inputs).__name__}.")
        if inputs.ndim < 3:
            raise ValueError(f"inputs must be (B, C, *spatial), got shape {tuple(inputs.shape)}.")
        net = unwrap_module(network)
        if not callable(getattr(net, "sample", None)):
            raise TypeError(
                f"network must be a CARNet (with a sample method), got {type(net).__name__}; for a plain network "
                "use monai.inferers.SimpleInferer."
            )
        x = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        if self.output == "calibration":
            out = net(x)
        else:
            generator = None
            if self.seed is not None:
                generator = torch.Generator(device=x.device).manual_seed(self.seed)
            samples = net.sample(x, self.num_samples, generator=generator, chunk_size=self.chunk_size)
            out = samples if self.output == "samples" else samples.mean(dim=1)
        if isinstance(inputs, MetaTensor):
            out = MetaTensor(out)
            out.copy_meta_from(inputs)  # meta, applied operations and is_batch (a batch's meta is per image)
        return out
