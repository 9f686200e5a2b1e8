"""Metrics benchmark: GED + HM-IoU of S samples vs 4 graders at 128x128, vectorised vs a per-pair loop.

Reference (``per_pair_loop``, written here): for each image, numpy IoU of every pair of masks, one pair at a time
(``d = 1 - IoU``, ``d = 0`` when both masks are empty; V-statistic GED over all ordered pairs, self-pairs included),
then HM-IoU on the sets duplicated to ``lcm(S, R)`` with ``scipy.optimize.linear_sum_assignment``.
Candidates: ``vectorised``, ``monai_car.metrics.compute_generalized_energy_distance`` +
``compute_hungarian_matched_iou`` on the whole batch of images at once (they count the pairs over each image's
foreground window only); ``vectorised_uncropped``, the same batched pair counts over the whole image, written here
from the library's private pieces (what the library did before the crop: the "before" of that change). All must
give the same numbers; the largest differences are recorded.

The masks are synthetic nodule-like ellipses (graders and samples jittered around one lesion, some of them empty,
some images with no lesion at all), so that every branch of the conventions is exercised.

Run: ``python benchmarks/bench_metrics.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
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
from scipy.optimize import linear_sum_assignment

__all__ = [
    "ged_reference",
    "hm_iou_reference",
    "iou_pair",
    "main",
    "make_masks",
    "uncropped_metrics",
    "vectorised_metrics",
]

SCRIPT = Path(__file__).resolve()
REFERENCE = "per_pair_loop"


def iou_pair(a: np.ndarray, b: np.ndarray) -> float:
    """Foreground IoU of two boolean masks; 1 when both are empty."""
    union = np.count_nonzero(a | b)
    if union == 0:
        return 1.0
    return np.count_nonzero(a & b) / union


def ged_reference(samples: np.ndarray, labels: np.ndarray) -> float:
    """``GED^2 = 2 E[d(s, y)] - E[d(s, s')] - E[d(y, y')]`` by a loop over every ordered pair (V-statistic)."""
    d_sy = np.mean([1.0 - iou_pair(s, y) for s in samples for y in labels])
    d_ss = np.mean([1.0 - iou_pair(s, t) for s in samples for t in samples])
    d_yy = np.mean([1.0 - iou_pair(y, v) for y in labels for v in labels])
    return float(2.0 * d_sy - d_ss - d_yy)


def hm_iou_reference(samples: np.ndarray, labels: np.ndarray) -> float:
    """HM-IoU: both sets duplicated to ``lcm(S, R)``, IoU of every pair by a loop, optimal 1:1 assignment."""
    n = math.lcm(len(samples), len(labels))
    dup_s = [samples[i % len(samples)] for i in range(n)]
    dup_y = [labels[j % len(labels)] for j in range(n)]
    iou = np.array([[iou_pair(s, y) for y in dup_y] for s in dup_s])
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return float(iou[rows, cols].mean())


def reference_metrics(samples: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image GED^2 and HM-IoU of ``(N, S, H, W)`` samples vs ``(N, R, H, W)`` labels, one image at a time."""
    ged = np.array([ged_reference(s, y) for s, y in zip(samples, labels)])
    hm = np.array([hm_iou_reference(s, y) for s, y in zip(samples, labels)])
    return ged, hm


def vectorised_metrics(samples: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The library's metrics on the whole batch: ``(N,)`` GED^2 and ``(N,)`` HM-IoU."""
    from monai_car.metrics import compute_generalized_energy_distance, compute_hungarian_matched_iou

    return compute_generalized_energy_distance(samples, labels), compute_hungarian_matched_iou(samples, labels)


def uncropped_metrics(samples: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The library's batched pair counts over the whole image, without the foreground crop: ``(N,)`` GED^2 and HM-IoU.

    ``samples`` / ``labels``: ``(N, S, H, W)`` / ``(N, R, H, W)`` bool masks (not validated here). GED, then HM-IoU,
    each with its own float copies, as the two library calls did before the crop.
    """
    from monai_car.metrics import hungarian_matched_iou_from_matrix
    from monai_car.metrics.pairwise_iou import count_dtype, iou_from_counts, pairwise_intersection_union

    a, b = samples.flatten(2), labels.flatten(2)
    dtype = count_dtype(a.shape[-1])

    def mean_distance(p: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
        return (1.0 - iou_from_counts(*pairwise_intersection_union(p, q, dtype))).mean(dim=(1, 2))

    def ged() -> torch.Tensor:  # its float copies are freed before HM-IoU makes its own
        af, bf = a.to(dtype), b.to(dtype)
        return 2.0 * mean_distance(af, bf) - mean_distance(af, None) - mean_distance(bf, None)

    ged_values = ged()
    hm = hungarian_matched_iou_from_matrix(iou_from_counts(*pairwise_intersection_union(a, b, dtype)))
    return ged_values, hm


def make_masks(
    num_images: int, num_samples: int, num_graders: int = 4, size: int = 128, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic nodule-like masks: ``(N, S, H, W)`` samples and ``(N, R, H, W)`` graders, boolean.

    Each image has one lesion (an ellipse of radius 3..20 px near the centre); graders and samples jitter its
    centre, radii and orientation, a quarter of the graders and a sixth of the samples draw nothing, and one image in
    eight has no lesion at all (every mask empty, where IoU is 1 by convention).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    def ellipses(n: int, cx: float, cy: float, r: float, empty_p: float) -> np.ndarray:
        ox, oy = rng.normal(0, 0.1 * r + 0.5, (2, n, 1, 1))
        ra, rb = r * rng.uniform(0.75, 1.25, (2, n, 1, 1))
        th = rng.uniform(0, np.pi, (n, 1, 1))
        dx, dy = xx[None] - (cx + ox), yy[None] - (cy + oy)
        u = dx * np.cos(th) + dy * np.sin(th)
        v = -dx * np.sin(th) + dy * np.cos(th)
        masks = (u / ra) ** 2 + (v / rb) ** 2 <= 1.0
        masks[rng.random(n) < empty_p] = False
        return masks

    samples = np.zeros((num_images, num_samples, size, size), dtype=bool)
    labels = np.zeros((num_images, num_graders, size, size), dtype=bool)
    for i in range(num_images):
        if i % 8 == 7:
            continue  # no lesion: all masks empty
        cx, cy = size / 2 + rng.normal(0, size / 16, 2)
        r = rng.uniform(3, min(20, size / 4))
        labels[i] = ellipses(num_graders, cx, cy, r, 0.25)
        samples[i] = ellipses(num_samples, cx, cy, r, 1 / 6)
    return samples, labels


def _cases(args: argparse.Namespace) -> list[dict[str, int]]:
    if args.tiny:
        return [
            {"images": 3, "samples": 4, "graders": 4, "size": 32},
            {"images": 2, "samples": 6, "graders": 4, "size": 24},
        ]
    n = 4 if args.quick else 16
    return [{"images": n, "samples": s, "graders": 4, "size": 128} for s in (16, 100)]


def _probe(payload: dict[str, Any]) -> None:
    """Child process: one implementation on one case, report its peak RSS."""
    setup_torch(payload["threads"], "cpu", payload["seed"])
    import monai_car.metrics  # noqa: F401  (imported before the baseline, like the reference's numpy/scipy)

    samples, labels = make_masks(payload["images"], payload["samples"], payload["graders"], payload["size"], 0)
    if payload["variant"] == REFERENCE:
        reference_metrics(samples[:1, :2], labels[:1])  # warm-up: lazy imports and first-call set-up are not workload
        result = measure_peak_rss(lambda: reference_metrics(samples, labels))
    else:
        s_t, y_t = torch.from_numpy(samples), torch.from_numpy(labels)
        fn = uncropped_metrics if payload["variant"] == "vectorised_uncropped" else vectorised_metrics
        fn(s_t[:1, :2], y_t[:1])  # warm-up on a sliver: torch's kernels and thread pool are loaded before measuring
        result = measure_peak_rss(lambda: fn(s_t, y_t))
    print_probe_result(result)


def run_case(case: dict[str, int], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Time the reference and the vectorised metrics on one case; check that they agree."""
    samples, labels = make_masks(case["images"], case["samples"], case["graders"], case["size"], args.seed)
    s_t, y_t = torch.from_numpy(samples).to(device), torch.from_numpy(labels).to(device)
    ref_ged, ref_hm = reference_metrics(samples, labels)
    vec_ged, vec_hm = vectorised_metrics(s_t, y_t)
    full_ged, full_hm = uncropped_metrics(s_t, y_t)
    sync = synchronizer(device)
    variants = {
        REFERENCE: lambda: reference_metrics(samples, labels),
        "vectorised": lambda: vectorised_metrics(s_t, y_t),
        "vectorised_uncropped": lambda: uncropped_metrics(s_t, y_t),
    }
    repeats = args.repeats or (2 if args.quick or args.tiny else 3)
    timing = compare(variants, REFERENCE, repeats=repeats, warmup=1, sync=sync)
    result: dict[str, Any] = {
        **case,
        "ged_mean": float(ref_ged.mean()),
        "hm_iou_mean": float(ref_hm.mean()),
        "max_abs_diff_ged": float(np.abs(ref_ged - vec_ged.double().cpu().numpy()).max()),
        "max_abs_diff_hm_iou": float(np.abs(ref_hm - vec_hm.double().cpu().numpy()).max()),
        "max_abs_diff_ged_uncropped": float(np.abs(ref_ged - full_ged.double().cpu().numpy()).max()),
        "max_abs_diff_hm_iou_uncropped": float(np.abs(ref_hm - full_hm.double().cpu().numpy()).max()),
        "variants": {},
    }
    for name, t in timing.items():
        result["variants"][name] = {
            "median_s": t["median_s"],
            "min_s": t["min_s"],
            "rounds": t["rounds"],
            "seconds_per_image": t["median_s"] / case["images"],
            "speedup_vs_loop": t["speedup"],
            "speedup_of_minima": t["speedup_of_minima"],
        }
    if not args.no_memory and (args.tiny or case["samples"] >= 100):
        for name in variants:
            if device.type == "cuda" and name != REFERENCE:
                reset_cuda_peak(device)
                variants[name]()
                result["variants"][name]["peak_mib"] = cuda_peak_mib(device)
            elif device.type == "cpu" and (not args.tiny or name == "vectorised"):
                payload = {**case, "variant": name, "threads": args.threads, "seed": args.seed}
                probe = run_probe(SCRIPT, payload, timeout_s=600)
                keys = ("peak_mib", "setup_mib", "workload_mib")
                result["variants"][name].update({k: probe.get(k) for k in keys})
                if "error" in probe:
                    result["variants"][name]["memory_error"] = probe["error"]
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    if args.probe is not None:
        _probe(json.loads(args.probe))
        return {}
    device = setup_torch(args.threads, args.device, args.seed)
    cases = []
    for case in _cases(args):
        print(f"[metrics] {case} ...", flush=True)
        cases.append(run_case(case, args, device))
        v = cases[-1]["variants"]["vectorised"]
        print(
            f"[metrics]   vectorised x{v['speedup_vs_loop']:.1f}, {v['seconds_per_image'] * 1e3:.2f} ms/image",
            flush=True,
        )
    targets = [
        {
            "target": f"GED + HM-IoU, S={c['samples']} vs {c['graders']} graders: >= 20x the per-pair loop",
            "variant": name,
            "value": c["variants"][name]["speedup_vs_loop"],
            "goal": 20.0,
            "met": c["variants"][name]["speedup_vs_loop"] >= 20.0,
        }
        for c in cases
        if c["samples"] == 100
        for name in ("vectorised", "vectorised_uncropped")
    ]
    result = {
        "benchmark": "metrics",
        "mode": "tiny" if args.tiny else ("quick" if args.quick else "full"),
        "environment": environment(device),
        "reference": "per-pair numpy IoU loop + scipy linear_sum_assignment, one image at a time (CPU)",
        "candidate": "monai_car.metrics.compute_generalized_energy_distance + compute_hungarian_matched_iou, batched",
        "cases": cases,
        "targets": targets,
    }
    path = write_json(result_path(args.out, "metrics", device, args.quick, args.tiny), result)
    print(f"[metrics] wrote {path}", flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
