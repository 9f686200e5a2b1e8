"""Timing, peak-memory and result-writing helpers shared by the monai-car benchmarks.

Every benchmark measures *ratios* against a reference implementation timed in the same process, interleaved with the
candidates round by round, because the machines these run on are shared and noisy: an absolute time is only ever
reported beside its ratio. Peak memory is measured honestly:

- on CPU, in a fresh subprocess per configuration (``ru_maxrss`` of that process, see :func:`run_probe`): torch
  allocations are invisible to ``tracemalloc``;
- on CUDA, with ``torch.cuda.max_memory_allocated`` after resetting the peak counter.

``torch`` is imported inside the functions that use it, so that the preprocessing benchmark's worker processes
(started with ``spawn``, which re-imports the main script) do not pay for importing it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "BENCH_DIR",
    "PROBE_PREFIX",
    "REPO_ROOT",
    "RESULTS_DIR",
    "add_common_args",
    "compare",
    "cuda_peak_mib",
    "environment",
    "max_abs_diff",
    "measure_peak_rss",
    "parse_int_list",
    "peak_rss_mib",
    "print_probe_result",
    "read_json",
    "reset_cuda_peak",
    "result_path",
    "run_probe",
    "setup_torch",
    "synchronizer",
    "write_json",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PROBE_PREFIX = "BENCH_PROBE_RESULT "


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options every benchmark script shares (``--quick``, ``--device``, ``--threads``, ``--out`` ...)."""
    parser.add_argument("--quick", action="store_true", help="small configurations: the suite finishes in minutes")
    parser.add_argument("--tiny", action="store_true", help="toy sizes for the smoke test (seconds; not a benchmark)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON result")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per configuration (default: by mode)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: one configuration, JSON payload
    return parser


def setup_torch(threads: int, device: str, seed: int = 0) -> torch.device:
    """Fix threads and seeds, check that ``device`` exists and return it."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch.cuda.is_available() is False.")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device | str) -> dict[str, Any]:
    """Where and when the numbers were taken: machine, threads, library versions, date (UTC)."""
    import torch

    dev = torch.device(device)
    env: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": dev.type,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(terse=True),
    }
    try:
        import monai

        env["monai"] = monai.__version__
    except ImportError:  # pragma: no cover - monai is a dependency
        env["monai"] = None
    try:
        import numpy

        env["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover
        env["numpy"] = None
    try:
        env["load_average_1m"] = round(os.getloadavg()[0], 2)  # other processes' load: read the ratios with it
    except OSError:
        env["load_average_1m"] = None
    try:
        with open("/proc/meminfo") as f:
            env["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        env["memory_gib"] = None
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env["gpu"] = torch.cuda.get_device_name(dev)
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["cuda"] = torch.version.cuda
    return env


def synchronizer(device: torch.device | str) -> Callable[[], None]:
    """A callable that waits for queued work on ``device`` (a no-op on CPU)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def compare(
    variants: dict[str, Callable[[], object]],
    reference: str,
    repeats: int = 3,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
    budget_s: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Time every variant, interleaved round by round, and express each as a speed-up over ``reference``.

    Each round runs every variant once, in an order rotated from round to round; the speed-up of a variant is the
    median over rounds of ``t_reference / t_variant`` measured in the same round, which cancels most of the drift
    of a shared machine. After the warm-up calls, the number of rounds is cut so that the rounds fit in
    ``budget_s`` seconds (at least one round).

    Returns:
        ``{name: {"median_s", "min_s", "times_s", "warmup_s", "rounds", "speedup", "speedup_of_minima"}}``;
        ``speedup`` (median of the per-round ratios) is 1 for the reference itself; ``speedup_of_minima`` compares
        the fastest rounds, the least disturbed by other load.
    """
    if reference not in variants:
        raise ValueError(f"reference {reference!r} is not one of {sorted(variants)}.")
    sync = sync or (lambda: None)
    names = list(variants)
    warm: dict[str, float] = {name: 0.0 for name in names}
    for _ in range(max(warmup, 0)):
        for name in names:
            warm[name] += _time_once(variants[name], sync)
    rounds = max(int(repeats), 1)
    if budget_s is not None and warmup > 0:
        per_round = sum(warm.values()) / warmup
        rounds = max(1, min(rounds, int(budget_s // max(per_round, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(_time_once(variants[name], sync))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        ratios = [t_ref / max(t, 1e-12) for t_ref, t in zip(times[reference], times[name])]
        best = min(times[reference]) / max(min(times[name]), 1e-12)
        out[name] = {
            "median_s": statistics.median(times[name]),
            "min_s": min(times[name]),
            "times_s": [round(t, 6) for t in times[name]],
            "warmup_s": round(warm[name] / max(warmup, 1), 6) if warmup > 0 else None,
            "rounds": rounds,
            "speedup": statistics.median(ratios),
            "speedup_of_minima": best,
        }
    return out


def _time_once(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b|`` in float64 on the CPU."""

    return float((a.detach().double().cpu() - b.detach().double().cpu()).abs().max())


def _status_mib(field: str) -> float | None:
    """A ``Vm*`` field of ``/proc/self/status`` in MiB (``None`` where there is no procfs)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process, MiB: ``VmHWM`` (this process image only; reset by
    :func:`reset_peak_rss`), else ``ru_maxrss``. ``ru_maxrss`` alone is not enough for a child process: Linux carries
    the parent's high-water mark over ``fork`` + ``exec``."""
    hwm = _status_mib("VmHWM")
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def current_rss_mib() -> float | None:
    """Resident set size of this process now, MiB (``None`` without procfs)."""
    return _status_mib("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark to its current RSS (Linux ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_peak_rss(fn: Callable[[], object]) -> dict[str, Any]:
    """Run ``fn`` once and report the process's RSS before (``setup_mib``), its peak during (``peak_mib``), the
    difference (``workload_mib``) and the time; meant for a fresh process (see :func:`run_probe`)."""
    setup = current_rss_mib()
    reset = reset_peak_rss()
    if setup is None or not reset:
        setup = peak_rss_mib()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    peak = max(peak_rss_mib(), setup)
    return {"peak_mib": peak, "setup_mib": setup, "workload_mib": peak - setup, "seconds": seconds}


def reset_cuda_peak(device: torch.device | str) -> None:
    """Release cached blocks and reset the CUDA peak counter (no-op on CPU)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def cuda_peak_mib(device: torch.device | str) -> float | None:
    """``torch.cuda.max_memory_allocated`` since the last :func:`reset_cuda_peak`, MiB (``None`` on CPU)."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    torch.cuda.synchronize(dev)
    return torch.cuda.max_memory_allocated(dev) / 2**20


def run_probe(script: Path | str, payload: dict[str, Any], timeout_s: float = 600.0) -> dict[str, Any]:
    """Run one configuration of ``script`` in a fresh Python process and return what it reports.

    The child is started as ``python script --probe '<payload JSON>'`` and must end by printing one line
    ``BENCH_PROBE_RESULT {json}`` (see :func:`print_probe_result`). A fresh process per configuration is what makes
    its ``ru_maxrss`` an honest peak for that configuration alone.

    Returns:
        The child's JSON, or ``{"error": "..."}`` when it failed or ran past ``timeout_s``.
    """
    cmd = [sys.executable, str(script), "--probe", json.dumps(payload)]
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=str(REPO_ROOT))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(PROBE_PREFIX):
            return json.loads(line[len(PROBE_PREFIX) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"probe exited with {proc.returncode}: {' | '.join(tail)}"}


def print_probe_result(result: dict[str, Any]) -> None:
    """Print a probe's result in the form :func:`run_probe` reads back."""
    print(PROBE_PREFIX + json.dumps(result), flush=True)


def result_path(out_dir: Path, name: str, device: torch.device | str, quick: bool, tiny: bool = False) -> Path:
    """``<out>/<name>_<device>[_quick|_tiny].json``: full runs, quick runs and smoke runs never overwrite each other."""
    import torch

    suffix = "_tiny" if tiny else ("_quick" if quick else "")
    return Path(out_dir) / f"{name}_{torch.device(device).type}{suffix}.json"


def write_json(path: Path | str, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON atomically (temporary file in the same folder, then ``os.replace``)."""
    from monai_car.utils.atomic import write_text_atomic

    path = Path(path)
    write_text_atomic(path, json.dumps(_rounded(data), indent=2, sort_keys=False) + "\n")
    return path


def read_json(path: Path | str) -> dict[str, Any]:
    """Read one result file."""
    with open(path) as f:
        return json.load(f)


def _rounded(obj: Any, digits: int = 6) -> Any:
    """Round floats recursively so that the JSON stays readable (6 significant decimals)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v, digits) for v in obj]
    return obj


def parse_int_list(text: str | Sequence[int]) -> list[int]:
    """``"1,8"`` -> ``[1, 8]`` (a sequence passes through)."""
    if isinstance(text, str):
        return [int(t) for t in text.split(",") if t.strip()]
    return [int(t) for t in text]
