"""Sample from an untrained CARNet: shapes, timing and a picture, with nothing downloaded.

Run ``python -m experiments.demo_sampling --out outputs/demo_sampling``. The network is untrained, so the samples are
noise-driven blobs: the point is the batched sampling path and its timing, not a segmentation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from monai_car.networks import CalibrationSegNet, CARDiscriminator, CARNet, RefinementUNet
from monai_car.utils.atomic import atomic_file, write_text_atomic

__all__ = ["main", "parameter_count"]


def parameter_count(module: torch.nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def _save_png(path: Path, image: np.ndarray, samples: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = samples.shape[0]
    fig, axes = plt.subplots(1, n + 2, figsize=(1.6 * (n + 2), 1.9))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("image", fontsize=7)
    axes[1].imshow(samples.mean(0), cmap="magma", vmin=0, vmax=1)
    axes[1].set_title("sample mean", fontsize=7)
    for i in range(n):
        axes[i + 2].imshow(samples[i], cmap="gray", vmin=0, vmax=1)
        axes[i + 2].set_title(f"sample {i}", fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    try:
        with atomic_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/demo_sampling"), help="output folder")
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.num_samples < 1 or args.size < 16:
        parser.error("--num-samples must be >= 1 and --size >= 16")
    torch.manual_seed(args.seed)
    net = CARNet(CalibrationSegNet(), RefinementUNet(in_channels=3)).eval()
    disc = CARDiscriminator(in_channels=3)
    x = torch.rand(1, 1, args.size, args.size, generator=torch.Generator().manual_seed(args.seed))
    with torch.inference_mode():
        net.sample(x, 2)  # warm-up
        start = time.perf_counter()
        samples = net.sample(x, args.num_samples, generator=torch.Generator().manual_seed(args.seed))
        seconds = time.perf_counter() - start
    result = {
        "parameters": {
            "F_CalibrationSegNet": parameter_count(net.calibration_net),
            "G_RefinementUNet": parameter_count(net.refinement_net),
            "D_CARDiscriminator": parameter_count(disc),
        },
        "samples_shape": list(samples.shape),
        "seconds_for_batched_draw": round(seconds, 4),
        "torch_threads": torch.get_num_threads(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    _save_png(args.out / "samples.png", x[0, 0].numpy(), samples[0, :8, 1].numpy())
    write_text_atomic(args.out / "result.json", json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"picture: {args.out / 'samples.png'}")
    return result


if __name__ == "__main__":
    main()
