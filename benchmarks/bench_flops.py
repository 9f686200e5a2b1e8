"""FLOP counts: the ceiling of what sharing G's noise-free work can gain, in sampling and in stage-2 training.

Every count is ``torch.utils.flop_counter.FlopCounterMode`` over the real library calls, run on the ``meta`` device
(shapes only: no arithmetic, seconds on any machine, the same numbers everywhere). A ratio of FLOPs is the speed-up
an implementation would reach if time were proportional to FLOPs; a measured speed-up above it comes from better
cache use or less overhead, one far below it from overhead.

- Sampling (``CARNet.sample`` in eval mode, the LIDC G at 128^2 and 64^3): the per-draw loop (one full G pass per
  draw) against the shared path (encoder, bottleneck and skip halves once per image, the decoder once per draw).
- Stage 2 (B = 8, 128^2, M = 5 and 20, the paper's widths, D updated every iteration as in ``bench_training``): one
  iteration of ``RefinementTrainer``'s work -- F without a graph; G's M samples per image, D on them, ``10 L_adv +
  5 L_cal`` and its backward; D on the reals for its accuracy; D's update on reals and fakes with R1's double
  backward -- with a G pass per sample (``shared_encoder=False``) against the shared path. The G-update part alone is
  reported beside it.

Run: ``python benchmarks/bench_flops.py [--tiny]``; writes ``benchmarks/results/flops_cpu.json`` (the counts do not
depend on the device or the threads, so ``--device`` and ``--threads`` are accepted and ignored: one file).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import torch
from bench_utils import add_common_args, environment, result_path, write_json
from torch.utils.flop_counter import FlopCounterMode

from monai_car.engines.refinement_utils import fake_discriminator_input, one_hot_label_map
from monai_car.losses import CalibrationLoss, discriminator_adversarial_loss, generator_adversarial_loss, r1_penalty
from monai_car.networks import CalibrationSegNet, CARDiscriminator, CARNet, RefinementUNet

__all__ = ["count_flops", "main", "sampling_flops", "stage2_flops"]

META = torch.device("meta")
SAMPLING_CASES = ((2, 128, 1, 16), (2, 128, 8, 16), (2, 128, 1, 100), (2, 128, 8, 100), (3, 64, 1, 16))
STAGE2_SAMPLES = (5, 20)
TINY_SAMPLING_CASES, TINY_STAGE2 = ((2, 32, 2, 3),), {"samples": 3, "batch": 2, "size": 32}
ADV_WEIGHT, CAL_WEIGHT, R1_WEIGHT = 10.0, 5.0, 10.0


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (multiply-adds counted as two)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _networks(spatial_dims: int) -> tuple[CARNet, CARDiscriminator]:
    """The LIDC defaults of the library's constructors (the paper's widths), on the meta device."""
    f = CalibrationSegNet(spatial_dims, 1, 2)
    g = RefinementUNet(spatial_dims, 3, 2)
    return CARNet(f, g).to(META), CARDiscriminator(spatial_dims, 3).to(META)


def sampling_flops(spatial_dims: int, size: int, batch: int, samples: int) -> dict[str, Any]:
    """FLOPs of S draws per image: the per-draw loop vs ``CARNet.sample``'s shared path (eval mode, F excluded)."""
    net, _ = _networks(spatial_dims)
    net.eval()
    x = torch.empty((batch, 1) + (size,) * spatial_dims, device=META)
    probs = torch.empty((batch, 2) + (size,) * spatial_dims, device=META)
    noise = torch.empty(batch, samples, net.noise_dim, device=META)

    def loop() -> None:
        for s in range(samples):
            net.refine(x, probs, noise[:, s])

    with torch.no_grad():
        per_draw = count_flops(loop)
        shared = count_flops(lambda: net.sample(x, samples, calibration_probs=probs, noise=noise))
    return {
        "spatial_dims": spatial_dims,
        "size": size,
        "batch": batch,
        "samples": samples,
        "per_draw_loop_gflop": per_draw / 1e9,
        "shared_gflop": shared / 1e9,
        "ceiling_speedup": per_draw / shared,
    }


def _stage2_iteration(net: CARNet, disc: CARDiscriminator, x: torch.Tensor, y: torch.Tensor, m: int, shared: bool):
    """Returns ``(g_update, whole)``: callables doing the G update alone and the whole iteration."""
    net.refinement_net.train()
    noise = torch.empty(x.shape[0], m, net.noise_dim, device=META)
    cal = CalibrationLoss()

    def g_update() -> torch.Tensor:
        with torch.no_grad():
            probs = net.calibration_net(x)
        samples = net.sample(x, m, calibration_probs=probs, noise=noise, share_in_training=shared)
        fake_in = fake_discriminator_input(x, samples, None)
        disc.requires_grad_(False)
        loss = ADV_WEIGHT * generator_adversarial_loss(disc(fake_in)) + CAL_WEIGHT * cal(samples, probs)
        disc.requires_grad_(True)
        loss.backward()
        return fake_in.detach()

    def whole() -> None:
        fake_in = g_update()
        real_in = torch.cat([x, one_hot_label_map(y, 2, None)], dim=1)
        with torch.no_grad():
            disc(real_in)  # D's accuracy on the reals before its update
        real_in = real_in.requires_grad_(True)
        logits = disc(torch.cat([real_in, fake_in], dim=0))
        real_logits, fake_logits = logits[: x.shape[0]], logits[x.shape[0] :]
        loss_d = discriminator_adversarial_loss(real_logits, fake_logits)
        (loss_d + R1_WEIGHT * r1_penalty(real_logits, real_in)).backward()

    return g_update, whole


def stage2_flops(samples: int, batch: int = 8, size: int = 128) -> dict[str, Any]:
    """FLOPs of one stage-2 iteration and of its G update, a G pass per sample vs the shared path."""
    net, disc = _networks(2)
    x = torch.empty(batch, 1, size, size, device=META)
    y = torch.zeros(batch, 1, size, size, dtype=torch.long, device=META)
    out: dict[str, Any] = {"samples": samples, "batch": batch, "size": size}
    for name, shared in (("per_sample", False), ("shared", True)):
        g_update, whole = _stage2_iteration(net, disc, x, y, samples, shared)
        out[f"{name}_g_update_gflop"] = count_flops(g_update) / 1e9
        out[f"{name}_iteration_gflop"] = count_flops(whole) / 1e9
    out["ceiling_speedup_g_update"] = out["per_sample_g_update_gflop"] / out["shared_g_update_gflop"]
    out["ceiling_speedup_iteration"] = out["per_sample_iteration_gflop"] / out["shared_iteration_gflop"]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    sampling = []
    for case in TINY_SAMPLING_CASES if args.tiny else SAMPLING_CASES:
        sampling.append(sampling_flops(*case))
        c = sampling[-1]
        print(
            f"[flops] sampling {c['spatial_dims']}D {c['size']}, B={c['batch']}, S={c['samples']}: loop "
            f"{c['per_draw_loop_gflop']:.1f} GFLOP, shared {c['shared_gflop']:.1f} GFLOP, ceiling "
            f"x{c['ceiling_speedup']:.2f}",
            flush=True,
        )
    stage2 = []
    for kwargs in [TINY_STAGE2] if args.tiny else [{"samples": m} for m in STAGE2_SAMPLES]:
        stage2.append(stage2_flops(**kwargs))
        s = stage2[-1]
        print(
            f"[flops] stage 2, M={s['samples']}: iteration per-sample {s['per_sample_iteration_gflop']:.0f} GFLOP, "
            f"shared {s['shared_iteration_gflop']:.0f} GFLOP, ceiling x{s['ceiling_speedup_iteration']:.2f} "
            f"(G update alone x{s['ceiling_speedup_g_update']:.2f})",
            flush=True,
        )
    result = {
        "benchmark": "flops",
        "mode": "tiny" if args.tiny else "full",
        "environment": environment("cpu"),
        "reference": "FLOPs counted on the meta device (torch.utils.flop_counter); the per-draw / per-sample path",
        "sampling": sampling,
        "stage2": stage2,
    }
    path = write_json(result_path(args.out, "flops", "cpu", False, args.tiny), result)
    print(f"[flops] wrote {path}", flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
