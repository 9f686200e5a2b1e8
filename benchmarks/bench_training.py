"""Training benchmark: seconds and peak memory per stage-2 iteration (batch 8, 128x128, M = 5 and 20) and per
stage-1 iteration, with the variants that could make them cheaper.

Stage 2 (F frozen, G and D trained), one iteration = one G update and one D update:
``L_G = 10 L_adv + 5 L_cal`` over all M samples per image (drawn in one pass), then
``L_D = BCE(real, fake) + 10 R1(real)`` with D scored on all M samples. Stage 1: one F update with cross entropy
against one randomly drawn grader per image. Reference (``baseline``): the iteration written straight from the
networks and losses, fp32, contiguous memory, F under ``torch.no_grad``. Variants:

- ``f_inference_mode``: F under ``torch.inference_mode``;
- ``channels_last``: models and inputs in channels-last memory format;
- ``bf16_autocast``: forward passes under ``torch.autocast(dtype=bfloat16)``;
- ``two_pass``: the memory-bounded G update with the exact gradient, ``--sample-chunk`` samples per image in a graph:
  the library's two passes (``monai_car.engines.two_pass``: ``draw_samples``, ``replay_generator_backward``) driven
  by :func:`two_pass_generator_step` on the same networks as ``baseline`` (runs made before its adoption measured a
  proposal's copy); ``two_pass_bf16`` the same under bfloat16 autocast;
- ``engine`` / ``engine_bf16``: ``monai_car.engines.RefinementTrainer``'s own iteration (its D schedule set to
  update D every iteration, like the others), without and with its AMP (bfloat16 autocast on CPU), with G's
  noise-free work shared by an image's M samples (``shared_encoder=True``, the default); stage 1:
  ``CalibrationTrainer``'s;
- ``engine_per_sample`` / ``engine_per_sample_bf16``: the same trainer with ``shared_encoder=False`` (a full G pass
  per sample, the engine before the shared path);
- ``engine_two_pass`` / ``engine_two_pass_bf16``: the trainer with ``sample_chunk_size=--sample-chunk`` (the two-pass
  update adopted into the library);
- ``compile`` (full mode, M = 5, separate bounded process): ``torch.compile`` on G.

Peak memory: CPU, ``ru_maxrss`` of a fresh process per (M, variant) running one iteration; CUDA,
``max_memory_allocated``.

Run: ``python benchmarks/bench_training.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from bench_utils import (
    add_common_args,
    compare,
    cuda_peak_mib,
    environment,
    measure_peak_rss,
    print_probe_result,
    reset_cuda_peak,
    result_path,
    run_probe,
    setup_torch,
    synchronizer,
    write_json,
)
from torch import nn
from torch.nn import functional as F

from monai_car.engines.two_pass import draw_samples, replay_generator_backward
from monai_car.losses import (
    CalibrationLoss,
    MaskedCrossEntropyLoss,
    discriminator_adversarial_loss,
    generator_adversarial_loss,
    r1_penalty,
)
from monai_car.networks import CalibrationSegNet, CARDiscriminator, CARNet, RefinementUNet

__all__ = [
    "Stage2",
    "build_stage1",
    "build_stage2",
    "main",
    "stage1_iteration",
    "stage2_iteration",
    "two_pass_generator_step",
]

SCRIPT = Path(__file__).resolve()
ADV_WEIGHT, CAL_WEIGHT, R1_WEIGHT = 10.0, 5.0, 10.0
STAGE2_VARIANTS = (
    "baseline",
    "engine",
    "engine_bf16",
    "engine_per_sample",
    "engine_per_sample_bf16",
    "f_inference_mode",
    "channels_last",
    "bf16_autocast",
    "two_pass",
    "two_pass_bf16",
    "engine_two_pass",
    "engine_two_pass_bf16",
)
STAGE1_VARIANTS = ("baseline", "engine", "channels_last", "bf16_autocast")


@dataclass
class Stage2:
    """Everything one stage-2 iteration touches."""

    net: CARNet
    disc: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    x: torch.Tensor
    real_label: torch.Tensor
    label: torch.Tensor


def _adam(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.99), weight_decay=5e-4)


def _nets(spatial_dims: int, tiny: bool) -> tuple[CalibrationSegNet, RefinementUNet, CARDiscriminator]:
    if tiny:
        return (
            CalibrationSegNet(spatial_dims, 1, 2, channels=(4, 8), convs_per_block=(1, 1)),
            RefinementUNet(spatial_dims, 3, 2, channels=(4, 8, 8, 8, 8), noise_dim=8),
            CARDiscriminator(spatial_dims, 3, channels=(8, 16)),
        )
    return CalibrationSegNet(spatial_dims, 1, 2), RefinementUNet(spatial_dims, 3, 2), CARDiscriminator(spatial_dims, 3)


def _data(batch: int, size: int, spatial_dims: int, device: torch.device, seed: int):
    """Images ``(B, 1, *spatial)`` in [0, 1], four graders' masks ``(B, 4, *spatial)``, one grader drawn per image."""
    gen = torch.Generator().manual_seed(seed)
    shape = (size,) * spatial_dims
    x = torch.rand((batch, 1) + shape, generator=gen)
    graders = (torch.rand((batch, 4) + shape, generator=gen) > 0.9).long()
    pick = torch.randint(0, 4, (batch,), generator=gen)
    label = graders[torch.arange(batch), pick]
    return x.to(device), graders.to(device), label.to(device)


def build_stage2(
    batch: int, size: int, device: torch.device, seed: int = 0, tiny: bool = False, channels_last: bool = False
) -> Stage2:
    """LIDC-default F (frozen), G and D with their Adam optimisers, and one batch of synthetic data."""
    torch.manual_seed(seed)
    f, g, d = _nets(2, tiny)
    net = CARNet(f, g).to(device)
    disc = d.to(device)
    net.calibration_net.eval().requires_grad_(False)
    net.refinement_net.train()
    x, _, label = _data(batch, size, 2, device, seed)
    real = F.one_hot(label, 2).movedim(-1, 1).float()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        disc = disc.to(memory_format=torch.channels_last)
        x, real = x.contiguous(memory_format=torch.channels_last), real.contiguous(memory_format=torch.channels_last)
    opt_g, opt_d = _adam(net.refinement_net.parameters(), 2e-4), _adam(disc.parameters(), 1e-5)
    return Stage2(net, disc, opt_g, opt_d, x, real, label)


def _repeat(x: torch.Tensor, m: int) -> torch.Tensor:
    b = x.shape[0]
    return x.unsqueeze(1).expand(b, m, *x.shape[1:]).reshape(b * m, *x.shape[1:])


def _d_step(st: Stage2, fake: torch.Tensor, ctx: Any) -> torch.Tensor:
    """One D update: BCE on real vs all fake samples plus the R1 penalty on the real inputs."""
    st.disc.requires_grad_(True)
    real = torch.cat([st.x, st.real_label], dim=1).requires_grad_(True)
    with ctx():
        real_logits = st.disc(real)
        fake_logits = st.disc(fake)
        loss_d = discriminator_adversarial_loss(real_logits.float(), fake_logits.float())
        loss_d = loss_d + R1_WEIGHT * r1_penalty(real_logits, real).float()
    st.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    st.opt_d.step()
    return loss_d.detach()


def two_pass_generator_step(
    net: CARNet,
    discriminator: nn.Module,
    x: torch.Tensor,
    probs: torch.Tensor,
    num_samples: int,
    sample_chunk: int,
    noise: torch.Tensor | None = None,
    adv_weight: float = ADV_WEIGHT,
    cal_weight: float = CAL_WEIGHT,
    calibration_loss: nn.Module | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Accumulate ``d L_G / d theta_G`` into G's ``.grad`` with at most ``B * sample_chunk`` rows in a graph, through
    the library's two passes (:mod:`monai_car.engines.two_pass`) outside the trainer.

    ``L_G = adv_weight * mean softplus(-D(x, s)) + cal_weight * L_cal(s, F(x))`` over all ``M`` samples, as in a plain
    single-pass update; D receives no gradient. Batch norm in G sees one chunk per forward, as with
    ``CARNet.sample(chunk_size=...)``; with ``sample_chunk >= M``, or G in eval mode, the gradient equals the
    single-pass one. Running statistics are updated once per chunk (the no-graph pass leaves them untouched).

    Args:
        net: F + G; only G is run.
        discriminator: D, conditioned on the image: ``D(cat(x, s))``.
        x: images ``(B, C, *spatial)``.
        probs: F's probabilities ``(B, K, *spatial)`` (detached).
        num_samples: ``M``.
        sample_chunk: samples per image in one graph.
        noise: ``(B, M, noise_dim)``; drawn from the global RNG when ``None``.
        adv_weight: weight of the non-saturating adversarial loss.
        cal_weight: weight of the calibration loss.
        calibration_loss: defaults to :class:`~monai_car.losses.CalibrationLoss`.
        autocast_dtype: run G and D under ``torch.autocast`` with this dtype (e.g. bfloat16); losses in float32.

    Returns:
        ``(samples, losses)``: the detached float32 ``(B, M, K, *spatial)`` samples (for D's update) and the loss
        values ``{"adv", "cal", "total"}``.
    """
    b, m = x.shape[0], int(num_samples)
    chunk = max(1, min(int(sample_chunk), m))

    def autocast() -> Any:
        if autocast_dtype is None:
            return nullcontext()
        return torch.autocast(x.device.type, dtype=autocast_dtype)

    cal = calibration_loss if calibration_loss is not None else CalibrationLoss()
    probs = probs.detach()
    if noise is None:
        noise = net.sample_noise(b * m, device=x.device, dtype=x.dtype).view(b, m, -1)
    samples, states = draw_samples(net, x, probs, noise, chunk, None, autocast)
    leaf = samples.detach().requires_grad_(True)
    l_cal = cal(leaf, probs)
    (sample_grad,) = torch.autograd.grad(cal_weight * l_cal, leaf)
    _, l_adv = replay_generator_backward(
        net, discriminator, x, probs, noise, states, chunk, None, sample_grad, adv_weight, None, autocast,
        lambda loss: loss.backward(),
    )  # fmt: skip
    adv, cal_value = float(l_adv), float(l_cal.detach())
    return samples, {"adv": adv, "cal": cal_value, "total": adv_weight * adv + cal_weight * cal_value}


def stage2_iteration(st: Stage2, num_samples: int, variant: str = "baseline", sample_chunk: int = 5) -> torch.Tensor:
    """One stage-2 iteration (G update, then D update on the same samples); returns ``L_G`` detached."""
    dev = st.x.device
    bf16 = variant in ("bf16_autocast", "two_pass_bf16")
    ctx: Callable[[], Any] = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    no_graph = torch.inference_mode if variant == "f_inference_mode" else torch.no_grad
    with no_graph():
        probs = st.net(st.x)
    if variant == "f_inference_mode":
        probs = probs.clone()  # a normal tensor: inference tensors cannot be saved for backward
    m = num_samples
    if variant in ("two_pass", "two_pass_bf16"):
        st.opt_g.zero_grad(set_to_none=True)
        dtype = torch.bfloat16 if variant == "two_pass_bf16" else None
        samples, losses = two_pass_generator_step(
            st.net,
            st.disc,
            st.x,
            probs,
            m,
            sample_chunk,
            adv_weight=ADV_WEIGHT,
            cal_weight=CAL_WEIGHT,
            autocast_dtype=dtype,
        )
        st.opt_g.step()
        loss_g = torch.tensor(losses["total"])
        fake = torch.cat([_repeat(st.x, m), samples.reshape(-1, *samples.shape[2:])], dim=1)
    else:
        st.disc.requires_grad_(False)
        with ctx():
            samples = st.net.sample(st.x, m, calibration_probs=probs)
            fake = torch.cat([_repeat(st.x, m), samples.reshape(-1, *samples.shape[2:])], dim=1)
            fake_logits = st.disc(fake)
        loss_g = ADV_WEIGHT * generator_adversarial_loss(fake_logits.float())
        loss_g = loss_g + CAL_WEIGHT * CalibrationLoss()(samples.float(), probs)
        st.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        st.opt_g.step()
        fake = fake.detach()
    _d_step(st, fake, ctx)
    return loss_g.detach()


def _engine_iteration(
    st: Stage2,
    num_samples: int,
    amp: bool = False,
    sample_chunk_size: int | None = None,
    shared_encoder: bool = True,
) -> Callable[[], object] | None:
    """``RefinementTrainer``'s own iteration on the same networks and batch (D updated every iteration, as in the
    other variants), or ``None`` when the engine is not there."""
    try:
        from monai_car.engines import RefinementTrainer
        from monai_car.handlers import DiscriminatorSchedule
    except ImportError:
        return None
    b = st.x.shape[0]
    batch = {"image": st.x, "grader_label": st.label.unsqueeze(1), "case_id": [f"case{i}" for i in range(b)]}
    trainer = RefinementTrainer(
        device=st.x.device,
        max_epochs=1,
        train_data_loader=[batch],
        network=st.net,
        discriminator=st.disc,
        g_optimizer=st.opt_g,
        d_optimizer=st.opt_d,
        num_samples=num_samples,
        adversarial_weight=ADV_WEIGHT,
        calibration_weight=CAL_WEIGHT,
        r1_weight=R1_WEIGHT,
        discriminator_schedule=DiscriminatorSchedule(update_iterations=1, frozen_iterations=0, accuracy_cap=None),
        amp=amp,
        sample_chunk_size=sample_chunk_size,
        shared_encoder=shared_encoder,
    )

    def run() -> object:
        trainer.state.iteration += 1
        return trainer._iteration(trainer, batch)

    return run


def _stage1_engine_iteration(f: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, label: torch.Tensor, amp: bool):
    """``CalibrationTrainer``'s own iteration, or ``None`` when the engine is not there."""
    try:
        from monai_car.engines import CalibrationTrainer
    except ImportError:
        return None
    b = x.shape[0]
    batch = {"image": x, "grader_label": label.unsqueeze(1), "case_id": [f"case{i}" for i in range(b)]}
    trainer = CalibrationTrainer(
        device=x.device, max_epochs=1, train_data_loader=[batch], network=f, optimizer=opt, amp=amp
    )

    def run() -> object:
        trainer.state.iteration += 1
        return trainer._iteration(trainer, batch)

    return run


def build_stage1(
    batch: int, size: int, device: torch.device, seed: int = 0, tiny: bool = False, channels_last: bool = False
):
    """F in training mode, its Adam optimiser, images and one grader's label per image."""
    torch.manual_seed(seed)
    f, _, _ = _nets(2, tiny)
    f = f.to(device).train()
    x, _, label = _data(batch, size, 2, device, seed)
    if channels_last:
        f = f.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return f, _adam(f.parameters(), 2e-4), x, label


def stage1_iteration(
    f: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, label: torch.Tensor, variant: str
) -> torch.Tensor:
    """One F update with masked cross entropy on logits."""
    ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if variant == "bf16_autocast" else nullcontext()
    with ctx:
        logits = f.forward_logits(x)
    loss = MaskedCrossEntropyLoss()(logits.float(), label)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def _stage2_callables(
    args: argparse.Namespace, device: torch.device, m: int, names: list[str], chunk: int
) -> dict[str, Callable[[], object]]:
    fns: dict[str, Callable[[], object]] = {}
    size, batch = args.size, args.batch
    for name in names:
        st = build_stage2(batch, size, device, args.seed, args.tiny, channels_last=name == "channels_last")
        if name.startswith("engine"):
            two_pass = name.startswith("engine_two_pass")
            if two_pass and m <= chunk:
                continue
            fn = _engine_iteration(
                st,
                m,
                amp=name.endswith("bf16"),
                sample_chunk_size=chunk if two_pass else None,
                shared_encoder="per_sample" not in name,
            )
            if fn is not None:
                fns[name] = fn
            continue
        if name in ("two_pass", "two_pass_bf16") and m <= chunk:
            continue
        fns[name] = lambda st=st, name=name: stage2_iteration(st, m, name, chunk)
    return fns


def _stage1_callables(
    args: argparse.Namespace, device: torch.device, names: list[str]
) -> dict[str, Callable[[], object]]:
    fns = {}
    for name in names:
        f, opt, x, label = build_stage1(args.batch, args.size, device, args.seed, args.tiny, name == "channels_last")
        if name in ("engine", "engine_bf16"):
            fn = _stage1_engine_iteration(f, opt, x, label, amp=name == "engine_bf16")
            if fn is not None:
                fns[name] = fn
            continue
        fns[name] = lambda f=f, opt=opt, x=x, label=label, name=name: stage1_iteration(f, opt, x, label, name)
    return fns


def _probe(payload: dict[str, Any]) -> None:
    """Child process: one (stage, M, variant); one iteration; report peak RSS and its time."""
    device = setup_torch(payload["threads"], payload["device"], payload["seed"])
    args = argparse.Namespace(**payload)
    if payload.get("variant") == "compile":
        print_probe_result(_compile_probe(args, device))
        return
    if payload["stage"] == 2:
        names = [payload["variant"]]
        fn = _stage2_callables(args, device, payload["samples"], names, payload["sample_chunk"])[names[0]]
    else:
        fn = _stage1_callables(args, device, [payload["variant"]])[payload["variant"]]
    print_probe_result(measure_peak_rss(fn))


def _compile_probe(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Child process: eager baseline vs ``torch.compile``-d G, stage 2 at M = ``args.samples``."""
    m = args.samples
    eager = build_stage2(args.batch, args.size, device, args.seed, args.tiny)
    comp = build_stage2(args.batch, args.size, device, args.seed, args.tiny)
    comp.net = CARNet(comp.net.calibration_net, torch.compile(comp.net.refinement_net, dynamic=False), 2)
    sync = synchronizer(device)
    start = time.perf_counter()
    stage2_iteration(comp, m)
    sync()
    compile_s = time.perf_counter() - start
    res = compare(
        {"baseline": lambda: stage2_iteration(eager, m), "compile": lambda: stage2_iteration(comp, m)},
        "baseline",
        repeats=args.repeats_compile,
        sync=sync,
    )
    return {
        "compile_seconds": compile_s,
        "eager_median_s": res["baseline"]["median_s"],
        "compiled_median_s": res["compile"]["median_s"],
        "speedup_vs_baseline": res["compile"]["speedup"],
    }


def _measure(
    fns: dict[str, Callable[[], object]], args: argparse.Namespace, device: torch.device, extra: dict[str, Any]
) -> dict[str, Any]:
    sync = synchronizer(device)
    repeats = args.repeats or (1 if args.quick or args.tiny else 2)
    timing = compare(fns, "baseline", repeats=repeats, warmup=1, sync=sync)
    out: dict[str, Any] = {}
    for name, t in timing.items():
        out[name] = {
            "median_s": t["median_s"],
            "min_s": t["min_s"],
            "rounds": t["rounds"],
            "speedup_vs_baseline": t["speedup"],
            "speedup_of_minima": t["speedup_of_minima"],
        }
    if args.no_memory:
        return out
    for name in fns:
        if args.tiny and name != "baseline":
            continue
        if args.quick and name == "engine":
            continue  # the engine builds the baseline's graph (same peak within 1% in the full runs): saves a probe
        if device.type == "cuda":
            reset_cuda_peak(device)
            fns[name]()
            out[name]["peak_mib"] = cuda_peak_mib(device)
        else:
            payload = {**_payload(args), **extra, "variant": name}
            probe = run_probe(SCRIPT, payload, timeout_s=900)
            out[name].update({k: probe.get(k) for k in ("peak_mib", "setup_mib", "workload_mib")})
            if "error" in probe:
                out[name]["memory_error"] = probe["error"]
    return out


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("threads", "device", "seed", "tiny", "size", "batch", "sample_chunk", "quick", "repeats")
    return {k: getattr(args, k) for k in keys}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--batch", type=int, default=None, help="images per batch (default 8; tiny: 2)")
    parser.add_argument("--size", type=int, default=None, help="image side (default 128; tiny: 32)")
    parser.add_argument("--samples", type=lambda t: [int(v) for v in t.split(",")], default=None, help="M values")
    parser.add_argument("--sample-chunk", type=int, default=5, help="two_pass: samples per image in one graph")
    parser.add_argument("--variants", type=lambda t: t.split(","), default=None, help="stage-2 variants")
    parser.add_argument("--compile-timeout", type=float, default=480.0, help="bound on the torch.compile probe, s")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    args = parser.parse_args(argv)
    if args.probe is not None:
        _probe(json.loads(args.probe))
        return {}
    args.batch = args.batch or (2 if args.tiny else 8)
    args.size = args.size or (32 if args.tiny else 128)
    if args.samples is None:
        args.samples = [3] if args.tiny else ([5] if args.quick else [5, 20])
    device = setup_torch(args.threads, args.device, args.seed)
    if args.variants is not None:
        names = ["baseline"] + [v for v in args.variants if v != "baseline"]
    elif args.quick or args.tiny:
        names = ["baseline", "engine", "engine_per_sample", "two_pass"]
    else:
        names = list(STAGE2_VARIANTS)
    stage2 = []
    for m in args.samples:
        chunk = max(1, m // 2) if (args.quick or args.tiny) and m <= args.sample_chunk else args.sample_chunk
        # the memory-format and F-only variants change little with M: measured at the smaller M only
        use = [n for n in names if not (n in ("f_inference_mode", "channels_last") and m > 5 and not args.tiny)]
        print(f"[training] stage 2, M={m}, batch {args.batch}, {args.size}^2: {use} ...", flush=True)
        fns = _stage2_callables(args, device, m, use, chunk)
        variants = _measure(fns, args, device, {"stage": 2, "samples": m, "sample_chunk": chunk})
        stage2.append(
            {"samples": m, "batch": args.batch, "size": args.size, "sample_chunk": chunk, "variants": variants}
        )
        base = variants["baseline"]
        print(f"[training]   baseline {base['median_s']:.2f} s/it, peak {base.get('peak_mib')} MiB", flush=True)
    print("[training] stage 1 ...", flush=True)
    s1_names = ["baseline"] if args.tiny else (["baseline", "engine"] if args.quick else list(STAGE1_VARIANTS))
    stage1 = {
        "batch": args.batch,
        "size": args.size,
        "variants": _measure(_stage1_callables(args, device, s1_names), args, device, {"stage": 1}),
    }
    compiled: dict[str, Any] = {"skipped": "quick/tiny mode or --no-compile"}
    if not (args.quick or args.tiny or args.no_compile):
        print(f"[training] torch.compile probe (bounded by {args.compile_timeout:.0f} s) ...", flush=True)
        payload = {**_payload(args), "stage": 2, "samples": 5, "variant": "compile", "repeats_compile": 2}
        compiled = {"samples": 5, **run_probe(SCRIPT, payload, timeout_s=args.compile_timeout)}
    targets = []
    for entry in stage2:
        if entry["samples"] == 20 and entry["batch"] == 8:
            for name, v in entry["variants"].items():
                if v.get("peak_mib") is not None:
                    targets.append(
                        {
                            "target": "stage-2 iteration, M=20, batch 8, 128^2: peak memory <= 4 GiB",
                            "variant": name,
                            "value": v["peak_mib"] / 1024,
                            "goal": 4.0,
                            "met": v["peak_mib"] <= 4096,
                        }
                    )
    result = {
        "benchmark": "training",
        "mode": "tiny" if args.tiny else ("quick" if args.quick else "full"),
        "environment": environment(device),
        "reference": "baseline: the stage-2 iteration written from the networks and losses (fp32, no_grad F)",
        "stage2": stage2,
        "stage1": stage1,
        "compile": compiled,
        "targets": targets,
    }
    path = write_json(result_path(args.out, "training", device, args.quick, args.tiny), result)
    print(f"[training] wrote {path}", flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
