"""Run the monai-car benchmark suite, one benchmark per process, then regenerate BENCHMARKS.md.

Run ``python benchmarks/run_all.py [--quick] [--device cuda] [--only sampling,metrics]``. Each benchmark writes
``benchmarks/results/<name>_<device>[_quick].json``; a benchmark that fails is reported and the others still run
(the exit status is then 1). Preprocessing has no GPU work and the FLOP counts do not depend on the device: both
run only with ``--device cpu``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from bench_utils import BENCH_DIR, RESULTS_DIR

__all__ = ["main"]

ORDER = ("sampling", "metrics", "training", "preprocessing", "flops", "sharpening")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small configurations: minutes on 2 CPU cores")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON results")
    parser.add_argument("--only", type=lambda t: t.split(","), default=list(ORDER), help="comma-separated subset")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--no-report", action="store_true", help="do not regenerate BENCHMARKS.md")
    args = parser.parse_args(argv)
    unknown = [n for n in args.only if n not in ORDER]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(ORDER)}")
    status: dict[str, str] = {}
    for name in ORDER:
        if name not in args.only:
            continue
        if name in ("preprocessing", "flops") and args.device != "cpu":
            status[name] = "skipped (CPU only: no GPU work / counts that do not depend on the device)"
            continue
        cmd = [sys.executable, str(BENCH_DIR / f"bench_{name}.py"), "--device", args.device]
        cmd += ["--threads", str(args.threads), "--out", str(args.out)]
        cmd += ["--quick"] if args.quick else []
        cmd += ["--no-memory"] if args.no_memory else []
        cmd += ["--no-compile"] if args.no_compile and name in ("sampling", "training") else []
        print(f"[run_all] {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        rc = subprocess.call(cmd)
        status[name] = f"{'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.perf_counter() - start:.0f} s"
    for name, text in status.items():
        print(f"[run_all] {name}: {text}", flush=True)
    if not args.no_report:
        import report

        # a run into another folder gets its report there: BENCHMARKS.md at the root reflects benchmarks/results/
        output = [] if args.out.resolve() == RESULTS_DIR.resolve() else ["--output", str(args.out / "BENCHMARKS.md")]
        report.main(["--results", str(args.out), *output])
    return 0 if all(not s.startswith("FAILED") for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
