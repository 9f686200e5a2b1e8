"""Shared pieces of the CAR engines: batch checks naming the bad case, small adapters, progress reporting."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

import torch
from monai.data import decollate_batch, list_data_collate
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from monai_car.transforms.utils import SKIP_REASON_KEY
from monai_car.utils.distributed import is_distributed, is_main_process
from monai_car.utils.enums import CarKeys
from monai_car.utils.validation import as_plain_tensor

ProgressBar, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "ProgressBar")
Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "PROGRESS_LOG_EVERY",
    "SKIP_REASON_KEY",
    "BatchCheck",
    "InvalidBatchError",
    "as_plain",
    "attach_progress_bar",
    "case_names",
    "check_batch",
    "check_has_batches",
    "frozen_parameters",
    "is_interactive",
    "merge_checkpoint_entries",
    "record_skipped",
    "select_cases",
    "usable_cases",
]


PROGRESS_LOG_EVERY = 50
"""Iterations between progress lines when the output is not a terminal (plus one line at the end of each epoch)."""


class InvalidBatchError(ValueError):
    """A batch holds cases that cannot be used; the message names each case and what is wrong with it."""


def as_plain(x: torch.Tensor) -> torch.Tensor:
    """A plain ``torch.Tensor`` view of ``x`` (MONAI's ``MetaTensor`` loses its metadata; others pass through)."""
    return as_plain_tensor(x, "x") if isinstance(x, torch.Tensor) else x


def case_names(batch: Mapping, size: int, case_key: str = CarKeys.CASE_ID, where: str = "") -> list[str]:
    """A name per case of a collated batch: its case id, else ``"<where> item i"``."""
    ids = batch.get(case_key)
    if isinstance(ids, (list, tuple)) and len(ids) == size:
        return [str(c) for c in ids]
    prefix = f"{where} " if where else ""
    return [f"{prefix}batch item {i} (no {case_key!r} in the batch)" for i in range(size)]


class BatchCheck:
    """The outcome of :func:`check_batch`: the case names and, per bad case, what is wrong."""

    def __init__(self, names: list[str], problems: dict[int, list[str]]) -> None:
        self.names = names
        self.problems = problems

    @property
    def valid_indices(self) -> list[int]:
        """Indices of the cases without problems."""
        return [i for i in range(len(self.names)) if i not in self.problems]

    @property
    def ok(self) -> bool:
        """Whether every case is usable."""
        return not self.problems

    def report(self) -> dict[str, str]:
        """``{case name: "; "-joined problems}`` of the bad cases."""
        return {self.names[i]: "; ".join(p) for i, p in sorted(self.problems.items())}

    def message(self, what: str) -> str:
        """A one-paragraph error message naming every bad case."""
        cases = "; ".join(f"case {name!r}: {reason}" for name, reason in self.report().items())
        return (
            f"{what}: {len(self.problems)} of {len(self.names)} cases in the batch cannot be used -- {cases}. Fix or "
            "remove these cases in the data set (the transforms' ValidateCased names them too), or build the engine "
            "with skip_invalid=True to leave them out and report them (a Python option; the LIDC bundle has none)."
        )


def _tensor(batch: Mapping, key: str, what: str) -> torch.Tensor:
    if key not in batch:
        raise KeyError(
            f"{what}: the batch has no {key!r} entry (keys: {sorted(map(str, batch))}); the transforms must provide "
            f"it, or pass the key name to the engine."
        )
    x = batch[key]
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: batch[{key!r}] must be a collated tensor, got {type(x).__name__}.")
    return x


def check_batch(
    batch: Any,
    image_key: str = CarKeys.IMAGE,
    grader_key: str | None = None,
    labels_key: str | None = None,
    require_labels: bool = False,
    in_channels: int | None = None,
    spatial_dims: int | None = None,
    num_classes: int | None = None,
    num_graders: int | None = None,
    ignore_index: int | None = None,
    case_key: str = CarKeys.CASE_ID,
    where: str = "",
) -> BatchCheck:
    """Check a collated batch and return, per case, what is wrong with it (nothing is raised for bad cases).

    Batch-level errors (not a dict, a missing key, tensors of the wrong rank or mismatched batch sizes) raise at once,
    since no case can be singled out. Per-case problems: a ``skip_reason`` mark from the transforms; NaN or inf in the
    image; a grader label that is not ``(1, *spatial)`` with integer classes in ``[0, K)`` (or ``ignore_index``);
    labels absent although required, or with a number of graders other than ``num_graders``, or not binary.

    Args:
        batch: the collated dict.
        image_key: the images ``(B, C, *spatial)``, floating point.
        grader_key: the drawn grader ``(B, 1, *spatial)`` (checked when given).
        labels_key: the stacked graders ``(B, R, *spatial)`` (checked when given and present).
        require_labels: whether ``labels_key`` must be present (evaluation with metrics).
        in_channels: the expected ``C``.
        spatial_dims: the expected number of spatial dims.
        num_classes: ``K`` for the grader label's range.
        num_graders: the expected ``R``.
        ignore_index: a label value allowed besides ``[0, K)`` (void pixels).
        case_key: the case-id key used in messages.
        where: context for messages (e.g. ``"iteration 12"``).

    Returns:
        a :class:`BatchCheck`.

    Raises:
        TypeError, KeyError, ValueError: on batch-level problems (see above).
    """
    what = f"{where}: " if where else ""
    image_key, case_key = str(image_key), str(case_key)
    grader_key = None if grader_key is None else str(grader_key)
    labels_key = None if labels_key is None else str(labels_key)
    if not isinstance(batch, Mapping):
        raise TypeError(f"{what}the engines expect a dict batch (dictionary transforms), got {type(batch).__name__}.")
    image = _tensor(batch, image_key, f"{what}image")
    if image.ndim < 3 or not image.is_floating_point():
        raise ValueError(
            f"{what}batch[{image_key!r}] must be floating point (B, C, *spatial), got {image.dtype} "
            f"{tuple(image.shape)}; add EnsureTyped(keys='{image_key}', dtype=torch.float32)."
        )
    b, spatial = image.shape[0], tuple(image.shape[2:])
    if spatial_dims is not None and len(spatial) != spatial_dims:
        raise ValueError(
            f"{what}batch[{image_key!r}] has {len(spatial)} spatial dims {tuple(image.shape)}, the networks expect "
            f"{spatial_dims} (B, C, *spatial)."
        )
    if in_channels is not None and image.shape[1] != in_channels:
        raise ValueError(
            f"{what}batch[{image_key!r}] has {image.shape[1]} channels {tuple(image.shape)}, the networks expect "
            f"{in_channels}."
        )
    names = case_names(batch, b, case_key, where)
    problems: dict[int, list[str]] = {}

    def add(i: int, reason: str) -> None:
        problems.setdefault(i, []).append(reason)

    reasons = batch.get(SKIP_REASON_KEY)
    if isinstance(reasons, (list, tuple)) and len(reasons) == b:
        for i, r in enumerate(reasons):
            if r:
                add(i, f"marked by the transforms: {r}")
    finite = torch.isfinite(as_plain(image).detach()).flatten(1).all(dim=1).tolist()
    for i, ok in enumerate(finite):
        if not ok:
            add(i, f"the image holds NaN or inf values ({image_key!r})")
    if grader_key is not None:
        grader = as_plain(_tensor(batch, grader_key, f"{what}grader label")).detach()
        if grader.shape != (b, 1, *spatial):
            raise ValueError(
                f"{what}batch[{grader_key!r}] must be one drawn grader (B, 1, *spatial) = {(b, 1, *spatial)} on the "
                f"image grid, got {tuple(grader.shape)}; use RandGraderd to draw it from the stacked graders."
            )
        flat = grader.flatten(1)
        bad = ~torch.isfinite(flat.float()) | (flat != flat.round())
        if num_classes is not None:
            out = (flat < 0) | (flat >= num_classes)
            if ignore_index is not None:
                out &= flat != ignore_index
            bad |= out
        for i in bad.any(dim=1).nonzero().flatten().tolist():
            allowed = f"[0, {num_classes - 1}]" if num_classes is not None else "integers"
            extra = f" or {ignore_index}" if ignore_index is not None else ""
            add(i, f"the grader label ({grader_key!r}) holds values outside {allowed}{extra}")
    if labels_key is not None:
        if labels_key not in batch or batch[labels_key] is None:
            if require_labels:
                for i in range(b):
                    add(i, f"no graders' labels ({labels_key!r}); metrics need them")
        else:
            labels = as_plain(_tensor(batch, labels_key, f"{what}labels")).detach()
            if labels.ndim != image.ndim or labels.shape[0] != b or tuple(labels.shape[2:]) != spatial:
                raise ValueError(
                    f"{what}batch[{labels_key!r}] must be the stacked graders (B, R, *spatial) on the image grid "
                    f"{(b, 'R', *spatial)}, got {tuple(labels.shape)}."
                )
            r = labels.shape[1]
            if r == 0:
                for i in range(b):
                    add(i, f"no graders' labels ({labels_key!r} has R = 0)")
            elif num_graders is not None and r != num_graders:
                for i in range(b):
                    add(i, f"{r} graders in {labels_key!r}, expected {num_graders}")
            else:
                flat = labels.flatten(1)
                non_binary = ((flat != 0) & (flat != 1)).any(dim=1)
                for i in non_binary.nonzero().flatten().tolist():
                    add(i, f"the graders' masks ({labels_key!r}) are not binary 0/1")
    return BatchCheck(names, problems)


def check_has_batches(engine: Any, what: str, fix: str) -> None:
    """Refuse to run ``engine`` over a data loader without batches (MONAI's ``Workflow.run`` warns and returns).

    Such a run ends without error and writes nothing, so an earlier run's checkpoint, best model or report would be
    left in place as if this run had written it.

    Args:
        engine: a MONAI workflow, before ``run``.
        what: the data in messages (e.g. ``"the training data loader"``).
        fix: what to do, appended to the message.

    Raises:
        ValueError: when the engine's ``epoch_length`` is 0.
    """
    if engine.state.epoch_length == 0:
        raise ValueError(
            f"{type(engine).__name__}: {what} yields no batches (epoch_length 0), so the run would do nothing and "
            f"write nothing, leaving any earlier run's outputs in place as if they were new. {fix}"
        )


def select_cases(batch: Mapping, indices: Sequence[int]) -> dict:
    """The sub-batch of the cases at ``indices`` (decollated and collated again, so ``MetaTensor`` metadata such as
    the affine stays with its case)."""
    items = decollate_batch(dict(batch), detach=False)
    return list_data_collate([items[i] for i in indices])


@contextlib.contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on ``module``'s parameters (gradients still flow to its inputs)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def usable_cases(engine: Any, batch: Mapping, check: BatchCheck, skip_invalid: bool, where: str) -> dict | None:
    """Apply the outcome of :func:`check_batch`: the batch itself when every case is usable; else an
    :class:`InvalidBatchError` naming the cases, or with ``skip_invalid`` the sub-batch of the usable cases (the others
    reported in ``engine.state.skipped_cases``), or None when no case is left.

    Raises:
        InvalidBatchError: without ``skip_invalid``; or under DDP when a whole batch would be skipped (the other ranks
            would wait for this one forever).
    """
    if check.ok:
        return dict(batch)
    if not skip_invalid:
        raise InvalidBatchError(check.message(where))
    record_skipped(engine, check.report(), where)
    if not check.valid_indices:
        if is_distributed():
            raise InvalidBatchError(check.message(f"{where} under DDP (a rank cannot skip a whole batch)"))
        return None
    return select_cases(batch, check.valid_indices)


def merge_checkpoint_entries(own: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """An engine's checkpoint entries (``None`` values dropped) plus ``extra`` ones, which must not collide."""
    out = {k: v for k, v in own.items() if v is not None}
    for k, v in (extra or {}).items():
        if k in out:
            raise ValueError(f"extra checkpoint entry {k!r} collides with the trainer's own entries {sorted(out)}.")
        out[k] = v
    return out


def record_skipped(engine: Any, report: Mapping[str, str], what: str) -> None:
    """Add ``{case: reason}`` to ``engine.state.skipped_cases`` and log a warning naming the cases."""
    skipped = getattr(engine.state, "skipped_cases", None)
    if skipped is None:
        skipped = {}
        engine.state.skipped_cases = skipped
    skipped.update(report)
    engine.logger.warning(f"{what}: skipping {len(report)} invalid case(s): {dict(report)}")


class _ScalarOutput:
    """Progress-bar view of an engine output: the listed keys that hold finite scalars, as floats."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)

    def __call__(self, output: Any) -> dict[str, float]:
        if not isinstance(output, Mapping):
            return {}
        shown = {}
        for k in self.keys:
            v = output.get(k)
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                v = v.item()
            if isinstance(v, (int, float)) and v == v:
                shown[k] = float(v)
        return shown


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and bool(stream.isatty())
    except (AttributeError, ValueError):  # a stream without isatty, or a closed one
        return False


def is_interactive() -> bool:
    """Whether progress can be drawn in place: stdout and stderr are terminals and the ``CI`` variable is unset
    (or ``0`` / ``false``). Otherwise a progress bar's carriage-return updates pile up in the log file."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    return _isatty(sys.stdout) and _isatty(sys.stderr)


class _ProgressLines:
    """A progress bar for logs: one line every ``every`` iterations of an epoch and one at its end, no ``\\r``.

    A line goes to the engine's logger at INFO when logging is set up to show it (the bundles' ``logging.conf``:
    stdout, beside the ``StatsHandler`` lines), else to stderr where the bar would have been drawn.
    """

    def __init__(self, output_transform: _ScalarOutput | None, every: int) -> None:
        self.output_transform = output_transform
        self.every = every
        self._start = time.perf_counter()

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)

    def _epoch_started(self, engine: Any) -> None:
        self._start = time.perf_counter()

    def _iteration_completed(self, engine: Any) -> None:
        state = engine.state
        length = state.epoch_length
        i = (state.iteration - 1) % length + 1 if length else state.iteration
        if i % self.every and i != length:
            return
        where = f"[{i}/{length}] {100 * i // length}%" if length else f"[{i}]"
        line = f"{type(engine).__name__} epoch [{state.epoch}/{state.max_epochs}]: {where}"
        values = self.output_transform(state.output) if self.output_transform is not None else {}
        if values:
            line += ", " + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        line += f" [{time.perf_counter() - self._start:.1f} s]"
        logger = engine.logger
        if logger.isEnabledFor(logging.INFO) and logger.hasHandlers():
            logger.info(line)
        else:
            print(line, file=sys.stderr, flush=True)


def attach_progress_bar(engine: Any, keys: Sequence[str] = (), every: int | None = None) -> None:
    """Show the progress of ``engine`` (rank 0 only), with the ``keys`` of the iteration output.

    On a terminal (:func:`is_interactive`): ignite's tqdm ``ProgressBar``, closed at the end of each epoch (of an
    evaluator: each run). Otherwise, a log line every ``every`` iterations and at the end of each epoch, e.g.
    ``CalibrationTrainer epoch [3/30]: [35/35] 100%, loss=0.2113 [2.1 s]``: the bar's in-place updates would
    fill a log file with carriage-return lines.

    Args:
        engine: the ignite engine.
        keys: output keys shown (finite scalars only).
        every: iterations between lines when not interactive (default :data:`PROGRESS_LOG_EVERY`).
    """
    every = PROGRESS_LOG_EVERY if every is None else every
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive int, got {every!r}.")
    if not is_main_process():
        return
    output_transform = _ScalarOutput(keys) if keys else None
    if is_interactive():
        ProgressBar(persist=True).attach(
            engine, output_transform=output_transform, closing_event_name=Events.EPOCH_COMPLETED
        )
    else:
        _ProgressLines(output_transform, every).attach(engine)
