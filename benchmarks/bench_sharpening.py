"""The sharpening terms of G's samples: what the calibrated target (Sinkhorn) costs against the argmax target.

One call is the loss and its backward on G's probabilities at the Cityscapes bundle's stage-2 shape (B = 8 images,
M = 7 samples, K = 25 classes, 64^2 crops), for two kinds of samples: ``soft`` (logits drawn from N(0, 1), early
training) and ``saturated`` (the same logits times 30, nearly one-hot, as G's samples are once they are label-like).
Variants, interleaved round by round (``bench_utils.compare``):

- ``argmax``: :func:`monai_car.losses.sharpening_loss` (the reference);
- ``calibrated``: :func:`monai_car.losses.calibrated_sharpening_loss` (5 Sinkhorn steps, epsilon 0.1);
- ``calibrated_subnormal``: the same transport with plain ``torch.logsumexp`` / ``torch.softmax``, as first written:
  on saturated samples the exponentials fill with subnormal floats, which CPUs handle many times slower. The library
  version counts terms below ``exp(-80)`` of a row's largest at that level (same probability floor, 1e-30).

Run: ``python benchmarks/bench_sharpening.py [--quick] [--tiny]``; writes
``benchmarks/results/sharpening_<device>.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import torch
from bench_utils import add_common_args, compare, environment, result_path, setup_torch, synchronizer, write_json

from monai_car.losses import calibrated_sharpening_loss, sharpening_loss

__all__ = ["calibrated_with_subnormals", "main"]

SHAPE = {"batch": 8, "samples": 7, "classes": 25, "size": 64}
TINY_SHAPE = {"batch": 2, "samples": 3, "classes": 5, "size": 8}
SATURATION = 30.0


def calibrated_with_subnormals(samples: torch.Tensor, target: torch.Tensor, epsilon: float = 0.1, iterations: int = 5):
    """The calibrated sharpening loss as first written (plain ``logsumexp`` and ``softmax``): the reference for the
    subnormal-float fix; the same targets up to terms below ``exp(-80)``."""
    tiny = 1e-30  # the library's probability floor
    with torch.no_grad():
        log_kernel = torch.log(samples.detach().clamp_min(tiny)) / epsilon
        log_col = torch.log(target.clamp_min(tiny)).unsqueeze(1)
        v = torch.zeros_like(log_col)
        for _ in range(iterations):
            u = -math.log(samples.shape[1]) - torch.logsumexp(log_kernel + v, dim=2, keepdim=True)
            v = log_col - torch.logsumexp(log_kernel + u, dim=1, keepdim=True)
        goal = torch.softmax(log_kernel + v, dim=2)
    return -(goal * torch.log(samples.clamp_min(tiny))).sum(dim=2).mean()


def _case(kind: str, shape: dict[str, int], device: torch.device, repeats: int, budget_s: float) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    b, m, k, n = shape["batch"], shape["samples"], shape["classes"], shape["size"]
    logits = torch.randn(b, m, k, n, n, generator=gen)
    if kind == "saturated":
        logits = logits * SATURATION
    logits = logits.to(device).requires_grad_(True)
    target = torch.softmax(3.0 * torch.randn(b, k, n, n, generator=gen), dim=1).to(device)

    def run(loss_fn: Any) -> Any:
        def call() -> None:
            logits.grad = None
            loss_fn(torch.softmax(logits, dim=2)).backward()

        return call

    variants = {
        "argmax": run(lambda s: sharpening_loss(s)),
        "calibrated": run(lambda s: calibrated_sharpening_loss(s, target)),
        "calibrated_subnormal": run(lambda s: calibrated_with_subnormals(s, target)),
    }
    with torch.no_grad():
        probs = torch.softmax(logits, dim=2)
        diff = (calibrated_sharpening_loss(probs, target) - calibrated_with_subnormals(probs, target)).abs().item()
    timed = compare(variants, "argmax", repeats=repeats, warmup=1, sync=synchronizer(device), budget_s=budget_s)
    for v in timed.values():  # cost relative to the argmax sharpening (the inverse of the speed-up)
        v["cost_vs_argmax"] = 1.0 / v["speedup"]
    timed["calibrated"]["speedup_vs_subnormal"] = (
        timed["calibrated_subnormal"]["median_s"] / timed["calibrated"]["median_s"]
    )
    return {"kind": kind, **shape, "loss_difference": diff, "variants": timed}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    device = setup_torch(args.threads, args.device)
    shape = TINY_SHAPE if args.tiny else SHAPE
    repeats, budget = (2, 5.0) if args.tiny else ((5, 30.0) if args.quick else (11, 90.0))
    cases = [_case(kind, shape, device, repeats, budget) for kind in ("soft", "saturated")]
    for c in cases:
        v = c["variants"]
        speedup = v["calibrated"]["speedup_vs_subnormal"]
        fix = f"the fix x{speedup:.2f} faster" if speedup >= 1 else f"the fix x{1 / speedup:.2f} slower"
        print(
            f"[sharpening] {c['kind']:9s} argmax {1e3 * v['argmax']['median_s']:.1f} ms, calibrated "
            f"{1e3 * v['calibrated']['median_s']:.1f} ms (x{v['calibrated']['cost_vs_argmax']:.2f} of argmax), "
            f"as first written {1e3 * v['calibrated_subnormal']['median_s']:.1f} ms "
            f"({fix}); "
            f"loss difference {c['loss_difference']:.1e}",
            flush=True,
        )
    result = {
        "benchmark": "sharpening",
        "reference": "argmax sharpening (sharpening_loss), loss + backward, interleaved rounds",
        "mode": "tiny" if args.tiny else ("quick" if args.quick else "full"),
        "environment": environment(device),
        "cases": cases,
    }
    path = write_json(result_path(args.out, "sharpening", device, args.quick, args.tiny), result)
    print(f"[sharpening] wrote {path}", flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
