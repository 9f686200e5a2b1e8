"""Tables of ``BENCHMARKS.md``: number formatting, one table per benchmark and the proposed-changes section.

Used by :mod:`report`, which loads the JSON results and assembles the page.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LIBRARY",
    "code_of",
    "fmt_diff",
    "fmt_mem",
    "fmt_peak",
    "fmt_s",
    "fmt_x",
    "label",
    "machine",
    "metrics_table",
    "preprocessing_table",
    "sampling_case",
    "sampling_table",
    "stage2_variant",
    "training_table",
]

# Where the code of every measured variant lives. "library": what the repository ships (``monai_car``, or
# ``preprocessing/``), called as a user would; "benchmark": written in the benchmark script on the library's networks
# and losses (the references, and the setting variants such as bf16 autocast that the engines expose as ``amp``);
# "proposal": ``benchmarks/proposals.py`` only, NOT in the library yet; "adopted": a proposal's copy measured in a run
# made before the change moved into the library (results written since measure the library's own variant: the
# shared encoder is ``batched``, the foreground crop ``vectorised``, the two-pass G update ``engine_two_pass``, and
# ``two_pass`` runs the library's two passes outside the trainer).
LIBRARY: dict[str, dict[str, str]] = {
    "sampling": {
        "loop": "benchmark",
        "batched": "library",
        "batched_no_grad": "library",
        "batched_chunk4": "library",
        "batched_channels_last": "library",
        "batched_bf16": "library",
        "batched_full_pass": "library",
        "shared_encoder": "adopted",
        "shared_encoder_bf16": "adopted",
    },
    "metrics": {
        "per_pair_loop": "benchmark",
        "vectorised": "library",
        "vectorised_uncropped": "benchmark",
        "vectorised_cropped": "adopted",
    },
    "training": {
        "baseline": "benchmark",
        "engine": "library",
        "engine_bf16": "library",
        "engine_per_sample": "library",
        "engine_per_sample_bf16": "library",
        "f_inference_mode": "benchmark",
        "channels_last": "benchmark",
        "bf16_autocast": "benchmark",
        "two_pass": "adopted",
        "two_pass_bf16": "adopted",
        "engine_two_pass": "library",
        "engine_two_pass_bf16": "library",
    },
    "preprocessing": {
        "single_process": "benchmark",
        "process_pool": "benchmark",
        "module_single_process": "library",
        "module_process_pool": "library",
    },
}


def code_of(benchmark: str, variant: str) -> str:
    """``"library"``, ``"benchmark"``, ``"proposal"`` or ``"adopted"`` (see :data:`LIBRARY`); a ``" (...)"`` suffix
    is ignored."""
    return LIBRARY.get(benchmark, {}).get(variant.split(" (")[0], "benchmark")


def label(benchmark: str, variant: str) -> str:
    """The variant's name, tagged when it is a proposal that the library does not have yet, or had not yet when it was
    measured."""
    tags = {"proposal": " *(proposal)*", "adopted": " *(proposal, since adopted)*"}
    return variant + tags.get(code_of(benchmark, variant), "")


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 100:
        return f"{seconds:.0f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def fmt_x(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if ratio >= 100:
        return f"x{ratio:.0f}"
    return f"x{ratio:.1f}" if ratio >= 10 else f"x{ratio:.2f}"


def fmt_mem(mib: float | None) -> str:
    if mib is None:
        return "-"
    return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def fmt_peak(v: dict[str, Any]) -> str:
    """Peak memory, with the part above the process's start-up state on CPU (``+...``) when it was measured."""
    text = fmt_mem(v.get("peak_mib"))
    if v.get("workload_mib") is not None:
        text += f" (+{fmt_mem(v['workload_mib'])})"
    return text


def fmt_diff(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def machine(res: dict[str, Any]) -> str:
    env = res["environment"]
    if env["device"] == "cuda":
        where = f"{env.get('gpu')} ({env.get('gpu_memory_gib')} GiB, CUDA {env.get('cuda')}); host CPU {env['cpu']}"
    else:
        where = f"{env['cpu']}, {env['cpu_count']} cores, {env.get('memory_gib')} GiB RAM"
    load = env.get("load_average_1m")
    return (
        f"{where}; torch {env['torch']} ({env['torch_threads']} threads), MONAI {env.get('monai')}, "
        f"{env['date_utc']}, {res['mode']} mode, load average at the end {load if load is not None else '-'}"
    )


def _best(variants: dict[str, dict[str, Any]], key: str, benchmark: str, code: str | None = None) -> str | None:
    """The variant with the largest ``key`` (a speed-up), among those whose code is ``code`` when given."""
    names = [n for n in variants if code is None or code_of(benchmark, n) == code]
    return max(names, key=lambda n: variants[n][key]) if names else None


def _marks(variants: dict[str, dict[str, Any]], key: str, benchmark: str) -> dict[str, str]:
    """``**(fastest)**`` on the fastest variant, ``**(fastest in the library)**`` on the library's best when it is
    another one."""
    marks = {}
    lib = _best(variants, key, benchmark, "library")
    if lib is not None:
        marks[lib] = " **(fastest in the library)**"
    best = _best(variants, key, benchmark)
    if best is not None:
        marks[best] = " **(fastest)**" + (" (also in the library)" if best == lib else "")
    return marks


def _compile_line(comp: dict[str, Any], what: str, key: str, reference: str) -> str:
    if key not in comp:
        return f"`torch.compile`: not measured ({comp.get('skipped') or comp.get('error')})."
    diff = f", max abs diff {fmt_diff(comp['max_abs_diff'])}" if "max_abs_diff" in comp else ""
    return (
        f"`torch.compile` on G ({what}, separate process): compile + first call {fmt_s(comp['compile_seconds'])}, "
        f"then {fmt_s(comp['compiled_median_s'])} vs eager {reference} {fmt_s(comp['eager_median_s'])}: "
        f"**{fmt_x(comp[key])}**{diff}. Not in the library (a user can wrap G)."
    )


def sampling_table(res: dict[str, Any]) -> list[str]:
    lines = [
        "| case | variant | time | samples/s | vs loop | peak memory | max abs diff vs loop |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in res["cases"]:
        dims = "x".join([str(c["size"])] * c["spatial_dims"])
        case = f"{dims}, B={c['batch']}, S={c['samples']}" + (
            f" (`CARNet.sample` in chunks of {c['chunk_size']} rows)" if c.get("chunk_size") else ""
        )
        marks = _marks(c["variants"], "speedup_vs_loop", "sampling")
        for name, v in c["variants"].items():
            lines.append(
                f"| {case} | {label('sampling', name)}{marks.get(name, '')} | {fmt_s(v['median_s'])} | "
                f"{v['samples_per_s']:.1f} | {fmt_x(v['speedup_vs_loop'])} | {fmt_peak(v)} | "
                f"{fmt_diff(v.get('max_abs_diff_vs_loop'))} |"
            )
            case = ""
        loop = c["variants"]["loop"]["median_s"]
        lines.append(
            f"| | F once (not in the ratios) | {fmt_s(c['f_seconds'])} | | {c['f_seconds'] / loop:.2f} of the "
            "loop's time | | |"
        )
    comp = res.get("compile", {})
    what = f"B={comp.get('batch')}, S={comp.get('samples')}"
    eager = comp.get("eager_variant", "batched")  # results since the shared encoder: the full-pass path, as compiled
    reference = "`CARNet.sample`" + (" with full passes (`batched_full_pass`)" if eager == "batched_full_pass" else "")
    return [*lines, "", _compile_line(comp, what, "speedup_vs_batched", reference)]


def metrics_table(res: dict[str, Any]) -> list[str]:
    lines = [
        "| images x samples vs graders | implementation | time | per image | vs loop | peak memory | GED / HM-IoU: "
        "max abs diff vs loop |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in res["cases"]:
        case = f"{c['images']} x {c['samples']} vs {c['graders']}, {c['size']}^2"
        diffs = {
            "vectorised": (c["max_abs_diff_ged"], c["max_abs_diff_hm_iou"]),
            "vectorised_uncropped": (c.get("max_abs_diff_ged_uncropped"), c.get("max_abs_diff_hm_iou_uncropped")),
            "vectorised_cropped": (c.get("max_abs_diff_ged_cropped"), c.get("max_abs_diff_hm_iou_cropped")),
        }
        for name, v in c["variants"].items():
            if name in diffs:
                agree = f"{fmt_diff(diffs[name][0])} / {fmt_diff(diffs[name][1])}"
            else:
                agree = f"{c['ged_mean']:.4f} / {c['hm_iou_mean']:.4f} (the values)"
            lines.append(
                f"| {case} | {label('metrics', name)} | {fmt_s(v['median_s'])} | {fmt_s(v['seconds_per_image'])} | "
                f"{fmt_x(v['speedup_vs_loop'])} | {fmt_peak(v)} | {agree} |"
            )
            case = ""
    return lines


def _winners(variants: dict[str, dict[str, Any]], what: str) -> str:
    """``what: fastest X (xN), fastest in the library Y (xM), lowest peak Z (..)``."""
    best = _best(variants, "speedup_vs_baseline", "training")
    lib = _best(variants, "speedup_vs_baseline", "training", "library")
    text = f"{what}: fastest **{label('training', best)}** ({fmt_x(variants[best]['speedup_vs_baseline'])})"
    if lib is not None and lib != best:
        text += f", fastest in the library **{lib}** ({fmt_x(variants[lib]['speedup_vs_baseline'])})"
    peaks = {n: v["peak_mib"] for n, v in variants.items() if v.get("peak_mib")}
    if peaks:
        low = min(peaks, key=peaks.get)
        text += f", lowest peak **{label('training', low)}** ({fmt_mem(peaks[low])})"
    return text


def training_table(res: dict[str, Any]) -> list[str]:
    lines = ["| stage | variant | s / iteration | vs baseline | peak memory |", "|---|---|---|---|---|"]
    winners = []
    for entry in res["stage2"]:
        stage = f"2: B={entry['batch']}, {entry['size']}^2, M={entry['samples']}"
        for name, v in entry["variants"].items():
            text = label("training", name) + (
                f" (chunk {entry['sample_chunk']})" if name.startswith("two_pass") else ""
            )
            lines.append(
                f"| {stage} | {text} | {fmt_s(v['median_s'])} | {fmt_x(v['speedup_vs_baseline'])} | {fmt_peak(v)} |"
            )
            stage = ""
        winners.append(_winners(entry["variants"], f"stage 2, M={entry['samples']}"))
    s1 = res["stage1"]
    stage = f"1: B={s1['batch']}, {s1['size']}^2"
    for name, v in s1["variants"].items():
        lines.append(
            f"| {stage} | {name} | {fmt_s(v['median_s'])} | {fmt_x(v['speedup_vs_baseline'])} | {fmt_peak(v)} |"
        )
        stage = ""
    winners.append(_winners(s1["variants"], "stage 1"))
    comp = res.get("compile", {})
    lines += ["", "What wins: " + "; ".join(winners) + "."]
    lines += ["", _compile_line(comp, f"stage 2 at M={comp.get('samples')}", "speedup_vs_baseline", "baseline")]
    return lines


def preprocessing_table(res: dict[str, Any]) -> list[str]:
    t = res["sample_totals"]
    lines = [
        f"Sample: {res['sample_scans']} of {res['scans_total']} scans spread over the index ({t['annotations']} "
        f"annotations, {t['nodules']} nodules, {t['slices']} four-grader 180x180 crops, {t['large_clusters']} "
        "clusters of more than four annotations skipped). Pool time includes its start-up (spawned workers).",
        "",
        "| implementation | workers | sample time | per scan | vs reference | vs reference, start-up excluded | "
        "same crops | all scans (extrapolated) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in res["variants"].items():
        mark = " **(fastest)**" if name == res.get("fastest") else ""
        startup = f" (start-up {fmt_s(v['startup_s'])})" if v["workers"] else ""
        lines.append(
            f"| {name}{mark} | {v['workers'] or 1} | {fmt_s(v['seconds'])}{startup} | {fmt_s(v['seconds_per_scan'])} | "
            f"{fmt_x(v['speedup'])} | {fmt_x(v.get('speedup_excluding_startup'))} | "
            f"{'yes' if v['agrees_with_reference'] else 'NO'} | {res['extrapolated_all_scans_s'][name] / 60:.2f} min |"
        )
    if "all_scans" in res:
        a = res["all_scans"]
        ref = res["extrapolated_all_scans_s"]["single_process"]
        lines += [
            "",
            f"All {res['scans_total']} scans with {a['variant']}, measured: {fmt_s(a['seconds'])}"
            + (f" (start-up {fmt_s(a['startup_s'])})" if a.get("startup_s") else "")
            + f", {fmt_x(ref / a['seconds'])} vs the plain-pylidc single-process "
            f"reference extrapolated to all scans ({ref / 60:.1f} min); totals {a['totals']}.",
        ]
    return lines


def sampling_case(res: dict[str, Any] | None, dims: int, batch: int, samples: int | None) -> dict[str, Any] | None:
    for c in (res or {}).get("cases", []):
        if c["spatial_dims"] == dims and c["batch"] == batch and (samples is None or c["samples"] == samples):
            return c
    return None


def stage2_variant(res: dict[str, Any], m: int, name: str) -> dict[str, Any] | None:
    for entry in res.get("stage2", []):
        if entry["samples"] == m and entry["batch"] == 8 and entry["size"] == 128:
            return entry["variants"].get(name)
    return None
