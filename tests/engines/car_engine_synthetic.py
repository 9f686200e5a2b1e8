"""Tiny synthetic CAR data and networks for the engine tests (self-contained: no data files, no transforms module)."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import MapTransform, Randomizable

from monai_car.networks import CalibrationSegNet, CARDiscriminator, CARNet, RefinementUNet
from monai_car.utils.enums import CarKeys

__all__ = ["DrawGrader", "make_cases", "make_loader", "make_networks", "record_samples"]


def make_cases(n: int = 16, size: int = 32, graders: int = 4, seed: int = 0) -> list[dict]:
    """``n`` random images ``(1, size, size)`` with ``graders`` jittered random blob masks each."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cases = []
    for i in range(n):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        r = rng.uniform(size * 0.1, size * 0.25)
        masks = []
        for _ in range(graders):
            jy, jx, jr = rng.normal(0, 1.5, 3)
            masks.append(((yy - cy - jy) ** 2 + (xx - cx - jx) ** 2 <= (r + jr) ** 2).astype(np.uint8))
        if i % 5 == 4:
            masks[-1][:] = 0  # a grader who did not mark the lesion
        label = np.stack(masks)
        image = 0.6 * label.mean(0, keepdims=True) + 0.2 * rng.standard_normal((1, size, size))
        cases.append(
            {
                CarKeys.IMAGE: torch.as_tensor(image, dtype=torch.float32),
                CarKeys.LABEL: torch.as_tensor(label),
                CarKeys.CASE_ID: f"case_{i:03d}",
            }
        )
    return cases


class DrawGrader(Randomizable, MapTransform):
    """Draw one grader's mask ``(1, *spatial)`` from the stacked ``(R, *spatial)`` masks (seeded via MONAI's ``R``)."""

    def __init__(self) -> None:
        MapTransform.__init__(self, [CarKeys.LABEL])
        self._index = 0

    def randomize(self, num_graders: int) -> None:
        self._index = int(self.R.randint(num_graders))

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        self.randomize(d[CarKeys.LABEL].shape[0])
        d[CarKeys.GRADER_LABEL] = d[CarKeys.LABEL][self._index : self._index + 1].clone()
        return d


def make_loader(
    cases: list[dict], batch_size: int = 4, shuffle: bool = True, sampler=None, generator: bool = True
) -> DataLoader:
    """A MONAI DataLoader (num_workers=0) over ``cases`` with the grader drawn per item."""
    return DataLoader(
        Dataset(cases, transform=DrawGrader()),
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=0,
        generator=torch.Generator() if generator else None,
    )


def make_networks(seed: int = 0, noise_dim: int = 4) -> tuple[CARNet, CARDiscriminator]:
    """A narrow CARNet (F: 2-level SegNet, G: 3-level U-Net) and D for 32x32 inputs."""
    torch.manual_seed(seed)
    f = CalibrationSegNet(in_channels=1, out_channels=2, channels=(4, 8), convs_per_block=(1, 1))
    g = RefinementUNet(in_channels=3, out_channels=2, channels=(4, 8, 16), noise_dim=noise_dim)
    d = CARDiscriminator(in_channels=3, channels=(4, 8))
    return CARNet(f, g), d


def record_samples(trainer) -> dict:
    """A dict that, once ``trainer`` has run, holds the last iteration's G samples ``samples`` ``(B, M, K, ...)``
    (detached) and F's probabilities ``probs`` (recorded at ``IterationEvents.FORWARD_COMPLETED``)."""
    from monai.engines.utils import IterationEvents

    from monai_car.utils.enums import CarKeys

    seen: dict = {}

    @trainer.on(IterationEvents.FORWARD_COMPLETED)
    def _grab(engine) -> None:
        out = engine.state.output
        seen["samples"] = out[CarKeys.SAMPLES].detach().clone()
        seen["probs"] = out[CarKeys.CALIBRATION].clone()

    return seen
