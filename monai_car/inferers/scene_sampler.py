"""Inference on 2D multi-class images (the Cityscapes bundle): per image, G's samples, the consensus and uncertainty.

For each case, a folder ``<output_dir>/<case_id>/`` written atomically (a reader never sees half of it):

- ``sample_00.png`` .. : the ``S`` hard samples (argmax of G), class ids as 8-bit PNG (the monai-car classes, 0 .. 24);
- ``consensus.png``: the class most samples predict per pixel; ``calibration.png``: F's argmax;
- ``entropy_calibration.png`` / ``entropy_samples.png``: F's entropy and the entropy of the samples' class
  frequencies, 8-bit, 255 = ``ln K`` nats;
- ``montage.png`` (optional): the picture of :func:`~monai_car.visualize.save_scene_montage`.

and ``summary.csv`` (atomic) with one row per case: its id, number of samples, the mean entropies and, per switchable
class, the fraction of samples that draw its copy where the consensus is the class or its copy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from monai_car.data.sample_set_io import atomic_case_dir
from monai_car.networks.nets import CARNet
from monai_car.utils.atomic import write_csv_atomic
from monai_car.utils.cityscapes_classes import COPY_IDS, COPY_NAMES, SWITCHABLE_TRAIN_IDS
from monai_car.utils.enums import CarKeys
from monai_car.utils.rng import derive_seed
from monai_car.utils.validation import as_plain_tensor, check_non_negative_int, check_positive_int

__all__ = ["SceneSampleWriter"]


def _png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array.astype(np.uint8)).save(path, format="PNG")


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """``(K, H, W)`` distribution -> ``(H, W)`` entropy in nats."""
    return -(p * p.clamp_min(1e-12).log()).sum(dim=0)


class SceneSampleWriter:
    """Run a CARNet over 2D cases and write their samples and uncertainty maps (see the module docstring).

    The noise of a case is drawn from ``derive_seed(seed, "case-noise", case_id)``, as
    :class:`~monai_car.engines.CAREvaluator` draws it: the same case gets the same samples in inference and evaluation.

    Args:
        network: the trained CARNet.
        num_samples: ``S`` per case.
        seed: the noise seed.
        device: where the network runs.
        montage: also write ``montage.png`` per case.
        switchable, copies, copy_names: the flip layout for the summary's per-class copy frequencies.
    """

    def __init__(
        self,
        network: CARNet,
        num_samples: int = 16,
        seed: int = 0,
        device: str | torch.device = "cpu",
        montage: bool = True,
        switchable: Sequence[int] = SWITCHABLE_TRAIN_IDS,
        copies: Sequence[int] = COPY_IDS,
        copy_names: Sequence[str] = COPY_NAMES,
    ) -> None:
        if not isinstance(network, CARNet):
            raise TypeError(f"network must be a monai_car.networks.CARNet, got {type(network).__name__}.")
        if not (len(switchable) == len(copies) == len(copy_names)):
            raise ValueError("switchable, copies and copy_names must have one entry per switchable class.")
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self.seed = check_non_negative_int(seed, "seed")
        self.montage = bool(montage)
        self.layout = list(zip(switchable, copies, copy_names))

    def _case(self, item: Mapping[str, Any], index: int) -> tuple[str, torch.Tensor]:
        if not isinstance(item, Mapping) or CarKeys.IMAGE not in item:
            raise ValueError(f"case {index} must be a dict with an {CarKeys.IMAGE.value!r} tensor (C, H, W).")
        image = as_plain_tensor(torch.as_tensor(item[CarKeys.IMAGE]), f"case {index} image").float()
        if image.ndim != 3:
            raise ValueError(f"case {index}: the image must be (C, H, W), got {tuple(image.shape)}.")
        return str(item.get(CarKeys.CASE_ID, f"case_{index:04d}")), image

    @torch.no_grad()
    def predict(self, image: torch.Tensor, case_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        """F's probabilities ``(K, H, W)`` and G's samples ``(S, K, H, W)`` of one image ``(C, H, W)``."""
        x = image.unsqueeze(0).to(self.device)
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "case-noise", case_id))
        noise = torch.randn((1, self.num_samples, self.network.noise_dim), generator=gen).to(self.device)
        probs = self.network(x)
        samples = self.network.sample(x, self.num_samples, calibration_probs=probs, noise=noise)
        return probs[0].float().cpu(), samples[0].float().cpu()

    def run(self, cases: Iterable[Mapping[str, Any]], output_dir: str | Path) -> Path:
        """Write every case's folder and ``summary.csv`` into ``output_dir``; return the CSV's path.

        Args:
            cases: dicts with ``image`` ``(C, H, W)`` (the eval transforms' output, e.g. a MONAI ``Dataset``) and
                ``case_id``; ``label`` ``(1, H, W)`` is drawn in the montage when present.
            output_dir: the folder (created).
        """
        from monai_car.visualize import save_scene_montage

        out = Path(output_dir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        total = len(cases) if hasattr(cases, "__len__") else None  # type: ignore[arg-type]
        for index, item in enumerate(tqdm(cases, total=total, desc="scenes", unit="image", mininterval=5.0)):
            case_id, image = self._case(item, index)
            probs, samples = self.predict(image, case_id)
            k = probs.shape[0]
            hard = samples.argmax(dim=1)  # (S, H, W)
            freq = torch.nn.functional.one_hot(hard, k).movedim(-1, 1).float().mean(dim=0)  # (K, H, W)
            consensus = freq.argmax(dim=0)
            scale = 255.0 / math.log(k)
            row: dict[str, Any] = {
                "case_id": case_id,
                "num_samples": self.num_samples,
                "mean_entropy_calibration": float(_entropy(probs).mean()),
                "mean_entropy_samples": float(_entropy(freq).mean()),
            }
            for original, copy, name in self.layout:
                region = (consensus == original) | (consensus == copy)
                value = float((hard[:, region] == copy).float().mean()) if bool(region.any()) else float("nan")
                row[f"copy_frequency_{name}"] = value
            with atomic_case_dir(out, case_id) as tmp:
                for s in range(hard.shape[0]):
                    _png(hard[s].numpy(), tmp / f"sample_{s:02d}.png")
                _png(consensus.numpy(), tmp / "consensus.png")
                _png(probs.argmax(dim=0).numpy(), tmp / "calibration.png")
                _png((_entropy(probs) * scale).clamp(0, 255).round().numpy(), tmp / "entropy_calibration.png")
                _png((_entropy(freq) * scale).clamp(0, 255).round().numpy(), tmp / "entropy_samples.png")
                if self.montage:
                    label = item.get(CarKeys.LABEL)
                    label = label if isinstance(label, (torch.Tensor, np.ndarray)) else None  # a path: not loaded
                    save_scene_montage(
                        tmp / "montage.png", image, samples=samples, calibration_probs=probs, label=label, title=case_id
                    )
            rows.append(row)
        if not rows:
            raise ValueError("no cases to infer: the datalist split or folder is empty.")
        return write_csv_atomic(out / "summary.csv", rows, list(rows[0]))
