"""Sampling benchmark: S draws of G per image in one batched pass vs a per-draw Python loop.

Reference (``loop``): F once, then one G pass per draw over the B images (what the authors' code does: its U-Net
decodes the draws serially). Candidates, all on the same F output and the same noise:

- ``batched``: ``CARNet.sample`` as shipped (all ``B * S`` rows through G, on CPU in its default chunks of
  ``CARNet.cpu_chunk_size`` rows per decoder pass unless ``--chunk-size`` is given),
  under ``torch.inference_mode``. G is in eval mode, so ``sample`` runs G's noise-free work (encoder, bottleneck,
  skip halves) once per image and only the noise-dependent decoder once per row
  (``RefinementUNet.forward_multi``); ``batched_no_grad`` the same under ``torch.no_grad``;
- ``batched_chunk4``: ``CARNet.sample`` with ``chunk_size=4`` rows per G pass (on CPU a large pass of 128x128
  rows runs out of cache: see BENCHMARKS.md);
- ``batched_channels_last``: model and inputs in channels-last memory format;
- ``batched_bf16``: the same under ``torch.autocast`` with bfloat16;
- ``batched_full_pass``: ``CARNet.sample`` with ``shared_encoder=False``, one full G pass per row (what ``sample``
  did before the shared path, and still does in training mode): the "before" of that change;
- ``compile`` (full mode only, in a separate bounded process): ``torch.compile`` on G, against eager
  ``batched_full_pass`` (a compiled G is a wrapper, which ``sample`` runs with full passes).

F's time (run once per batch, not in the ratios) is reported beside. Peak memory: CPU, ``ru_maxrss`` of a fresh
process per (case, variant) that runs only G (F's probabilities are random there); CUDA, ``max_memory_allocated``.

Run: ``python benchmarks/bench_sampling.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_utils import (
    add_common_args,
    compare,
    cuda_peak_mib,
    environment,
    max_abs_diff,
    measure_peak_rss,
    print_probe_result,
    reset_cuda_peak,
    result_path,
    run_probe,
    setup_torch,
    synchronizer,
    write_json,
)

from monai_car.networks import CalibrationSegNet, CARNet, RefinementUNet

__all__ = ["build_net", "main", "make_variants"]

SCRIPT = Path(__file__).resolve()
REFERENCE = "loop"
MEMORY_VARIANTS = ("loop", "batched", "batched_bf16", "batched_full_pass")
# the variants of --quick and of the large full cases; the others (no_grad, channels_last) on the small ones only
CORE_VARIANTS = ["loop", "batched", "batched_chunk4", "batched_bf16", "batched_full_pass"]
LARGE_ROWS = 400


def build_net(spatial_dims: int, tiny: bool, device: torch.device, seed: int = 0) -> CARNet:
    """The LIDC-default CARNet (SegNet F; RefinementUNet G, base 32 channels, z_dim 8) or a toy one, in eval mode."""
    torch.manual_seed(seed)
    if tiny:
        f = CalibrationSegNet(spatial_dims, 1, 2, channels=(4, 8), convs_per_block=(1, 1))
        g = RefinementUNet(spatial_dims, 3, 2, channels=(4, 8, 8, 8, 8), noise_dim=8)
    else:
        f = CalibrationSegNet(spatial_dims, 1, 2)
        g = RefinementUNet(spatial_dims, 3, 2, noise_dim=8)
    return CARNet(f, g).to(device).eval()


def _cases(args: argparse.Namespace) -> list[dict[str, int]]:
    if args.tiny:
        cases = [(2, 32, 2, 3), (3, 16, 1, 2)]
    elif args.quick:
        cases = [(2, 128, 1, 16), (2, 128, 1, 100), (3, 64, 1, 4)]
    else:
        cases = [(2, 128, 1, 16), (2, 128, 1, 100), (2, 128, 8, 16), (2, 128, 8, 100), (3, 64, 1, 16)]
    return [{"spatial_dims": d, "size": n, "batch": b, "samples": s} for d, n, b, s in cases]


def _autocast(device: torch.device) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16)


def make_variants(
    net: CARNet,
    x: torch.Tensor,
    probs: torch.Tensor,
    noise: torch.Tensor,
    chunk_size: int | None,
    names: list[str] | None = None,
) -> dict[str, Callable[[], torch.Tensor]]:
    """The sampling implementations, each a no-argument callable returning ``(B, S, K, *spatial)`` probabilities."""
    device = x.device
    s = noise.shape[1]

    def loop() -> torch.Tensor:
        with torch.inference_mode():
            return torch.stack([net.refine(x, probs, noise[:, i]) for i in range(s)], dim=1)

    def batched(
        ctx: Callable[[], Any] = torch.inference_mode, model: CARNet = net, xx=x, pp=probs, rows=chunk_size
    ) -> torch.Tensor:
        with ctx():
            return model.sample(xx, s, calibration_probs=pp, noise=noise, chunk_size=rows)

    def chunk4() -> torch.Tensor:
        with torch.inference_mode():
            return net.sample(x, s, calibration_probs=probs, noise=noise, chunk_size=4)

    def batched_bf16() -> torch.Tensor:
        with torch.inference_mode(), _autocast(device):
            return net.sample(x, s, calibration_probs=probs, noise=noise, chunk_size=chunk_size)

    # the same F and G, with sample's shared path switched off: one full G pass per row
    full_pass_net = CARNet(net.calibration_net, net.refinement_net, net.num_classes, shared_encoder=False)
    # full passes of all rows at once would need several GiB at 128x128 on CPU: chunks of 128 rows, as measured before
    full_pass_rows = chunk_size if chunk_size is not None or device.type != "cpu" else 128

    fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
    variants: dict[str, Callable[[], torch.Tensor]] = {
        "loop": loop,
        "batched": batched,
        "batched_no_grad": lambda: batched(torch.no_grad),
        "batched_chunk4": chunk4,
        "batched_channels_last": None,  # type: ignore[dict-item]  # built below only when asked for (a model copy)
        "batched_bf16": batched_bf16,
        "batched_full_pass": lambda: batched(model=full_pass_net, rows=full_pass_rows),
    }
    if names is None or "batched_channels_last" in names:
        net_cl = copy.deepcopy(net).to(memory_format=fmt)
        x_cl, p_cl = x.contiguous(memory_format=fmt), probs.contiguous(memory_format=fmt)
        variants["batched_channels_last"] = lambda: batched(torch.inference_mode, net_cl, x_cl, p_cl)
    keep = names if names is not None else list(variants)
    return {k: v for k, v in variants.items() if k in keep and v is not None}


def _inputs(case: dict[str, int], net: CARNet, device: torch.device, seed: int, real_f: bool = True):
    b, s, n, d = case["batch"], case["samples"], case["size"], case["spatial_dims"]
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((b, 1) + (n,) * d, generator=gen).to(device)
    noise = torch.randn(b, s, net.noise_dim, generator=gen).to(device)
    if real_f:
        with torch.inference_mode():
            probs = net(x)
    else:
        probs = torch.softmax(torch.randn((b, 2) + (n,) * d, generator=gen), dim=1).to(device)
    return x, probs, noise


def _probe(payload: dict[str, Any]) -> None:
    """Child process: one (case, variant), report its peak RSS (CPU) or peak allocation (CUDA)."""
    device = setup_torch(payload["threads"], payload["device"], payload["seed"])
    if payload.get("variant") == "compile":
        print_probe_result(_compile_probe(payload, device))
        return
    net = build_net(payload["spatial_dims"], payload["tiny"], device, payload["seed"])
    x, probs, noise = _inputs(payload, net, device, payload["seed"], real_f=False)
    name = payload["variant"]
    make_variants(net, x, probs, noise[:, :1], payload["chunk_size"], [name])[name]()  # warm-up: one draw
    fn = make_variants(net, x, probs, noise, payload["chunk_size"], [name])[name]
    print_probe_result(measure_peak_rss(fn))


def _compile_probe(payload: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Child process: eager ``batched_full_pass`` vs ``torch.compile``-d G on one case, compile time included.

    ``CARNet.sample`` takes a compiled G (a wrapper module) through full passes, so the eager reference is the same
    algorithm, ``batched_full_pass``.
    """
    net = build_net(payload["spatial_dims"], payload["tiny"], device, payload["seed"])
    x, probs, noise = _inputs(payload, net, device, payload["seed"])
    eager = make_variants(net, x, probs, noise, payload["chunk_size"], ["batched_full_pass"])["batched_full_pass"]
    compiled_net = CARNet(net.calibration_net, torch.compile(net.refinement_net, dynamic=False), net.num_classes)
    comp = make_variants(compiled_net, x, probs, noise, payload["chunk_size"], ["batched"])["batched"]
    sync = synchronizer(device)
    start = time.perf_counter()
    out = comp()
    sync()
    compile_s = time.perf_counter() - start
    diff = max_abs_diff(out, eager())
    res = compare({"batched": eager, "compile": comp}, "batched", repeats=payload["repeats"], sync=sync)
    return {
        "eager_variant": "batched_full_pass",
        "compile_seconds": compile_s,
        "eager_median_s": res["batched"]["median_s"],
        "compiled_median_s": res["compile"]["median_s"],
        "speedup_vs_batched": res["compile"]["speedup"],
        "max_abs_diff": diff,
    }


def _memory_variants(args: argparse.Namespace, case: dict[str, int]) -> tuple[str, ...]:
    """Variants whose peak memory is probed on CPU (a process each); the smoke test probes one."""
    if args.tiny:
        return ("batched",) if case == _cases(args)[0] else ()
    if args.quick:
        return ("loop", "batched", "batched_full_pass")
    return MEMORY_VARIANTS


def run_case(case: dict[str, int], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Time every variant of one case against the loop; add agreement and peak memory."""
    net = build_net(case["spatial_dims"], args.tiny, device, args.seed)
    x, probs, noise = _inputs(case, net, device, args.seed)
    sync = synchronizer(device)
    with torch.inference_mode():
        net(x)
        sync()
        t0 = time.perf_counter()
        net(x)
        sync()
        f_seconds = time.perf_counter() - t0
    chunk = args.chunk_size if device.type == "cpu" else args.cuda_chunk_size
    names = args.variants
    if names is None and (args.quick or case["batch"] * case["samples"] >= LARGE_ROWS or case["spatial_dims"] == 3):
        names = CORE_VARIANTS
    variants = make_variants(net, x, probs, noise, chunk or None, names)
    outputs: dict[str, torch.Tensor] = {}
    diffs: dict[str, float] = {}

    def keep_first(name: str, fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            out = fn()
            if name not in diffs:
                if REFERENCE not in outputs and name == REFERENCE:
                    outputs[REFERENCE] = out
                diffs[name] = max_abs_diff(out, outputs[REFERENCE]) if REFERENCE in outputs else float("nan")
            return out

        return run

    wrapped = {name: keep_first(name, fn) for name, fn in variants.items()}
    repeats = args.repeats or (2 if args.quick or args.tiny else 3)
    budget = 20.0 if args.tiny else (90.0 if args.quick else 240.0)
    timing = compare(wrapped, REFERENCE, repeats=repeats, warmup=1, sync=sync, budget_s=budget)
    rows = case["batch"] * case["samples"]
    result: dict[str, Any] = {**case, "chunk_size": chunk or None, "f_seconds": f_seconds, "variants": {}}
    for name, t in timing.items():
        entry = {
            "median_s": t["median_s"],
            "min_s": t["min_s"],
            "rounds": t["rounds"],
            "speedup_vs_loop": t["speedup"],
            "speedup_of_minima": t["speedup_of_minima"],
            "samples_per_s": rows / t["median_s"],
            "max_abs_diff_vs_loop": diffs.get(name),
        }
        result["variants"][name] = entry
    outputs.clear()
    if not args.no_memory:
        for name in variants:
            if device.type == "cuda":
                reset_cuda_peak(device)
                variants[name]()
                result["variants"][name]["peak_mib"] = cuda_peak_mib(device)
            elif name in _memory_variants(args, case):
                payload = {**case, "variant": name, "chunk_size": chunk or None, "tiny": args.tiny}
                payload.update(threads=args.threads, device=args.device, seed=args.seed)
                probe = run_probe(SCRIPT, payload, timeout_s=600)
                entry = result["variants"][name]
                entry.update({k: probe.get(k) for k in ("peak_mib", "setup_mib", "workload_mib")})
                if "error" in probe:
                    result["variants"][name]["memory_error"] = probe["error"]
    fastest = max(result["variants"], key=lambda k: result["variants"][k]["speedup_vs_loop"])
    result["fastest"] = fastest
    return result


def _targets(cases: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    out = []
    for c in cases:
        if c["spatial_dims"] == 2 and c["samples"] == 16 and device.type == "cpu":
            for name in ("batched", c["fastest"]):
                v = c["variants"].get(name)
                if v is None:
                    continue
                out.append(
                    {
                        "target": f"sampling S=16, B={c['batch']}, {c['size']}^2: >= 4x the per-draw loop (CPU)",
                        "variant": name,
                        "value": v["speedup_vs_loop"],
                        "goal": 4.0,
                        "met": v["speedup_vs_loop"] >= 4.0,
                    }
                )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=0,
        help="rows per G pass on CPU (0: CARNet.sample's default, 4 rows per decoder pass; full passes 128 rows)",
    )
    parser.add_argument("--cuda-chunk-size", type=int, default=0, help="rows per G pass on CUDA (0: all at once)")
    parser.add_argument("--variants", type=lambda t: t.split(","), default=None, help="comma-separated subset")
    parser.add_argument("--compile-timeout", type=float, default=420.0, help="bound on the torch.compile probe, s")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    args = parser.parse_args(argv)
    if args.probe is not None:
        _probe(json.loads(args.probe))
        return {}
    if args.variants is not None and REFERENCE not in args.variants:
        args.variants = [REFERENCE] + args.variants
    device = setup_torch(args.threads, args.device, args.seed)
    cases = []
    for case in _cases(args):
        print(f"[sampling] {case} ...", flush=True)
        cases.append(run_case(case, args, device))
        best = cases[-1]["fastest"]
        print(f"[sampling]   fastest: {best} x{cases[-1]['variants'][best]['speedup_vs_loop']:.2f}", flush=True)
    compiled: dict[str, Any] = {"skipped": "quick/tiny mode or --no-compile"}
    if not (args.quick or args.tiny or args.no_compile):
        case = {"spatial_dims": 2, "size": 128, "batch": 1, "samples": 16}
        chunk = args.chunk_size if device.type == "cpu" else args.cuda_chunk_size
        payload = {**case, "variant": "compile", "chunk_size": chunk or None, "tiny": False, "repeats": 3}
        payload.update(threads=args.threads, device=args.device, seed=args.seed)
        print(f"[sampling] torch.compile probe (bounded by {args.compile_timeout:.0f} s) ...", flush=True)
        compiled = {**case, **run_probe(SCRIPT, payload, timeout_s=args.compile_timeout)}
    result = {
        "benchmark": "sampling",
        "mode": "tiny" if args.tiny else ("quick" if args.quick else "full"),
        "environment": environment(device),
        "reference": "loop: F once, then one G pass per draw over the B images (inference_mode, fp32)",
        "cases": cases,
        "compile": compiled,
        "targets": _targets(cases, device),
    }
    path = write_json(result_path(args.out, "sampling", device, args.quick, args.tiny), result)
    print(f"[sampling] wrote {path}", flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
