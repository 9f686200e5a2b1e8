"""Which stages of a multi-stage training a run skips, continues or trains afresh: one command resumes a crash.

A two-stage training (the LIDC bundle's ``training``: stage 1 trains F, stage 2 trains G and D on that F) killed in
stage 2 must not train stage 1 again. :class:`StageResume` decides for one stage from the checkpoints in its folder,
when it is first asked (``action``):

- with ``resume`` and a final checkpoint (``calibration.pt``) that a run with the same settings (:class:`StageSettings
  <monai_car.utils.StageSettings>`), geometry and previous stage wrote at its end, after as many epochs as this run
  asks for: **skip** the stage;
- with ``resume``, else: the latest epoch checkpoint (``stage1_checkpoint_epoch=N.pt``), or a final checkpoint of
  fewer epochs (a stage trained further), whichever is further on: **resume** from it, loaded at the start by a
  :class:`~monai_car.handlers.StrictCheckpointLoader` (networks, optimisers, LR schedules, D schedule, the best-model
  saver's history, RNG states: the continuation repeats the uninterrupted run bit for bit on the same machine);
- else **fresh**: the stage trains from the start, and first removes its earlier checkpoints (its final file, its
  epoch checkpoints and what killed writers left of them), so that nothing of an earlier run can later be taken for
  this run's. Without ``resume`` a stage always starts afresh.

A checkpoint trained with other settings, another geometry or on another result of the previous stage is refused
with a :class:`~monai_car.utils.CheckpointSettingsError` / :class:`~monai_car.utils.CheckpointGeometryError` naming
what differs, never silently continued or trained over. A final checkpoint written when its run failed (MONAI's saver
writes one on an exception) is not resumed from: the epoch checkpoints are.

In a run of both stages, :meth:`StageResume.follow` ties stage 2 to stage 1: when stage 1 trains, stage 2 starts
afresh (its checkpoints came from an earlier F); when stage 1 is skipped, stage 2 decides at once, so that a stage-2
mismatch stops the run before anything trains.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from monai_car.handlers.checkpoint_loader import StrictCheckpointLoader
from monai_car.handlers.checkpoint_saver import AtomicCheckpointSaver
from monai_car.utils.atomic import file_digest
from monai_car.utils.checkpoint import CheckpointKeyError, epoch_checkpoints, read_checkpoint
from monai_car.utils.distributed import is_distributed, is_main_process
from monai_car.utils.geometry import (
    GEOMETRY_KEY,
    SETTINGS_KEY,
    CheckpointGeometryError,
    CheckpointSettingsError,
    StageSettings,
    TrainingGeometry,
    as_training_geometry,
)
from monai_car.utils.validation import check_bool, check_positive_int

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["FRESH", "RESUME", "SKIP", "StageResume", "file_digest"]

SKIP = "skip"
"""The stage's final checkpoint is complete and matches: the stage does not train."""
RESUME = "resume"
"""The stage continues from a checkpoint (:attr:`StageResume.load_path`)."""
FRESH = "fresh"
"""The stage trains from the start."""

logger = logging.getLogger(__name__)


class _Checkpoint(NamedTuple):
    """What the decision needs of one checkpoint file."""

    path: Path
    content: Mapping[str, Any]
    iteration: int
    epoch_length: int
    max_epochs: int | None

    @property
    def epochs(self) -> int:
        """Whole epochs trained."""
        return self.iteration // self.epoch_length

    @property
    def ended_its_run(self) -> bool:
        """Written at the end of its run (all its epochs), not when the run failed or was stopped."""
        return self.max_epochs is not None and self.iteration == self.max_epochs * self.epoch_length


def _same_state(a: Any, b: Any) -> bool:
    """Two state dicts hold the same values (tensors bit for bit)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and torch.equal(a, b)
        )
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return bool(a == b)


class StageResume:
    """The decision for one training stage: skip it, resume it from a checkpoint, or train it afresh.

    Decided once, when first needed (:attr:`action`, :meth:`attach`, :meth:`run`, :meth:`follow`); the module
    docstring gives the rules. Under DDP every rank decides from the same files; only the main rank removes files,
    after all ranks have read them.

    Args:
        stage: the stage's config section (``"stage1"``), in messages and options (``--stage1#max_epochs``).
        resume: continue or skip from existing checkpoints; False: train afresh (a bool, or the word ``true`` /
            ``false`` as the bundle's command line passes it).
        final_checkpoint: the file the stage's saver writes at its end (``models/calibration.pt``).
        max_epochs: the epochs this run trains the stage for.
        settings: the stage's settings (a :class:`~monai_car.utils.StageSettings` or a mapping of them), which its
            checkpoints record under ``"settings"``; the same object belongs in the saver's ``save_dict``.
        geometry: the stage's training geometry, checked against its checkpoints' ``"geometry"``; None: not checked.
        epoch_prefix: the ``file_prefix`` of the stage's epoch checkpoints (``<prefix>_checkpoint_epoch=N.pt``);
            default ``stage``.
        upstream: ``{entry: checkpoint file}``: entries the stage's checkpoints must hold exactly as that file holds
            them, e.g. ``{"calibration_net": "models/calibration.pt"}`` for stage 2 (F is frozen in it, so a stage-2
            checkpoint whose F differs came from another run of stage 1).
        checkpoint_dir: the folder of the epoch checkpoints; default the final checkpoint's.
        fresh_hint: how to train the stage afresh instead, appended to refusals (``"run train_refinement without
            --resume ..."``).
        map_location: ``map_location`` of the resume loader.

    Raises:
        ValueError, TypeError: on malformed arguments.
    """

    def __init__(
        self,
        stage: str,
        resume: bool | str,
        final_checkpoint: str | os.PathLike,
        max_epochs: int,
        settings: StageSettings | Mapping[str, Any],
        geometry: TrainingGeometry | Mapping[str, Any] | None = None,
        epoch_prefix: str | None = None,
        upstream: Mapping[str, str | os.PathLike] | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        fresh_hint: str = "",
        map_location: Any = None,
    ) -> None:
        if not isinstance(stage, str) or not stage:
            raise ValueError(f"stage must name the stage's config section, got {stage!r}.")
        self.stage = stage
        self.resume = check_bool(resume, "resume")
        self.final_checkpoint = Path(final_checkpoint)
        self.max_epochs = check_positive_int(max_epochs, f"{stage}#max_epochs")
        self.settings = settings if isinstance(settings, StageSettings) else StageSettings(settings)
        self.geometry = None if geometry is None else as_training_geometry(geometry)
        self.epoch_prefix = stage if epoch_prefix is None else str(epoch_prefix)
        self.upstream = {str(k): Path(v) for k, v in (upstream or {}).items()}
        self.checkpoint_dir = self.final_checkpoint.parent if checkpoint_dir is None else Path(checkpoint_dir)
        self.fresh_hint = str(fresh_hint)
        self.map_location = map_location
        self._action: str | None = None
        self._load_path: Path | None = None
        self._adopt: tuple[int, Path] | None = None  # the latest epoch checkpoint, when resuming

    # --- the decision ----------------------------------------------------------------------------------------------
    @property
    def action(self) -> str:
        """:data:`SKIP`, :data:`RESUME` or :data:`FRESH` (decided on first access)."""
        if self._action is None:
            self._decide()
        return str(self._action)

    @property
    def trains(self) -> bool:
        """Whether the stage trains in this run (resumed or afresh)."""
        return self.action != SKIP

    @property
    def load_path(self) -> Path | None:
        """The checkpoint the stage continues from (:data:`RESUME`), else None."""
        self.action  # noqa: B018 (decides)
        return self._load_path

    def follow(self, upstream: StageResume) -> None:
        """Tie this stage to the stage before it in the same run.

        When ``upstream`` trains in this run (afresh or continued), this stage starts afresh, whatever ``resume``
        says: its checkpoints were trained on an earlier result of ``upstream``. When ``upstream`` is skipped, this
        stage decides now, so that a refusal comes before anything trains.

        Raises:
            RuntimeError: this stage has already decided.
        """
        if not isinstance(upstream, StageResume):
            raise TypeError(f"upstream must be a StageResume, got {type(upstream).__name__}.")
        if self._action is not None:
            raise RuntimeError(f"{self.stage} has already decided to {self._action}; call follow() before that.")
        if upstream.trains:
            self._start_fresh(f"{upstream.stage} trains in this run")
        else:
            self._decide()

    def _decide(self) -> None:
        if not self.resume:
            self._start_fresh("resume is false")
            return
        candidates: list[_Checkpoint] = []
        if self.final_checkpoint.is_file():
            final = self._read(self.final_checkpoint)
            if final.ended_its_run:
                self._check(final)
                if final.epochs == self.max_epochs:
                    self._set(SKIP)
                    self._log(
                        f"{self.stage} is complete in {final.path} ({final.epochs} of {self.max_epochs} epochs, "
                        "trained with this run's settings): skipped."
                    )
                    return
                candidates.append(final)
            else:
                self._log(
                    f"{final.path} was written when its run stopped at iteration {final.iteration} of "
                    f"{(final.max_epochs or 0) * final.epoch_length}; {self.stage} is not resumed from it.",
                    logging.WARNING,
                )
        latest = epoch_checkpoints(self.checkpoint_dir, self.epoch_prefix)
        if latest:
            self._adopt = latest[-1]
            candidates.append(self._read(latest[-1][1]))
        if not candidates:
            self._start_fresh("there is no checkpoint to resume from")
            return
        chosen = max(candidates, key=lambda c: c.iteration)  # the final checkpoint on a tie (listed first)
        self._check(chosen)
        if chosen.epochs > self.max_epochs:
            raise ValueError(
                f"{chosen.path} has trained {self.stage} for {chosen.epochs} epochs, more than this run's "
                f"{self.stage}#max_epochs ({self.max_epochs}): set --{self.stage}#max_epochs {chosen.epochs} or more "
                f"to continue it.{self._hint()}"
            )
        self._set(RESUME, chosen.path)
        self._remove(self._stale_temporaries(), "what interrupted writes left")
        self._log(
            f"{self.stage} resumes from {chosen.path} (iteration {chosen.iteration}, epoch {chosen.epochs} of "
            f"{self.max_epochs})."
        )

    def _set(self, action: str, load_path: Path | None = None) -> None:
        self._action, self._load_path = action, load_path
        if action != RESUME:
            self._adopt = None

    def _start_fresh(self, why: str) -> None:
        self._set(FRESH)
        own = [self.final_checkpoint] if self.final_checkpoint.is_file() else []
        own += [path for _, path in epoch_checkpoints(self.checkpoint_dir, self.epoch_prefix)]
        removed = self._remove([*own, *self._stale_temporaries()], "earlier checkpoints")
        names = ", ".join(p.name for p in removed if p in own)
        self._log(f"{self.stage} trains afresh ({why}){f'; removed its earlier checkpoints {names}' if names else ''}.")

    # --- checks ----------------------------------------------------------------------------------------------------
    def _hint(self) -> str:
        return f" {self.fresh_hint}" if self.fresh_hint else ""

    def _read(self, path: Path) -> _Checkpoint:
        content = read_checkpoint(path, map_location="cpu", mmap=True)
        state = content.get("trainer")
        keys = ("iteration", "epoch_length")
        if not isinstance(state, Mapping) or not all(isinstance(state.get(k), int) for k in keys):
            raise CheckpointKeyError(
                f"checkpoint {str(path)!r} holds no trainer state (its entries are {sorted(content)}), so where "
                f"{self.stage} stopped is unknown; it is not a checkpoint of this stage.{self._hint()}"
            )
        if state["epoch_length"] < 1 or state["iteration"] < 0:
            raise CheckpointKeyError(f"checkpoint {str(path)!r} has a malformed trainer state {dict(state)!r}.")
        max_epochs = state.get("max_epochs")
        return _Checkpoint(
            path,
            content,
            state["iteration"],
            state["epoch_length"],
            max_epochs if isinstance(max_epochs, int) else None,
        )

    def _check(self, checkpoint: _Checkpoint) -> None:
        """Refuse a checkpoint of other settings, another geometry or another result of the previous stage."""
        source = f"checkpoint {str(checkpoint.path)!r}"
        try:
            self.settings.check(checkpoint.content.get(SETTINGS_KEY), source)
            if self.geometry is not None:
                self.geometry.check(checkpoint.content.get(GEOMETRY_KEY), source)
        except CheckpointGeometryError as e:
            raise type(e)(f"{e}{self._hint()}") from None
        for entry, path in self.upstream.items():
            upstream = read_checkpoint(path, map_location="cpu", mmap=True)
            if entry not in upstream or entry not in checkpoint.content:
                where = str(path) if entry not in upstream else str(checkpoint.path)
                raise CheckpointKeyError(f"checkpoint {where!r} has no entry {entry!r} to compare.{self._hint()}")
            if not _same_state(upstream[entry], checkpoint.content[entry]):
                raise CheckpointSettingsError(
                    f"{source} was trained on another {entry!r} than {str(path)!r} holds: the previous stage was "
                    f"trained again after it was written, so it cannot continue on this one.{self._hint()}"
                )

    # --- files -----------------------------------------------------------------------------------------------------
    def _stale_temporaries(self) -> list[Path]:
        """Hidden temporary files of the stage's checkpoints that a killed writer left (``.<name>.tmp-*``)."""
        head = f"{self.epoch_prefix}_" if self.epoch_prefix else ""
        found = sorted(self.checkpoint_dir.glob(f".{head}checkpoint_epoch=*.pt.tmp-*"))
        found += sorted(self.final_checkpoint.parent.glob(f".{self.final_checkpoint.name}.tmp-*"))
        return found

    def _remove(self, paths: list[Path], what: str) -> list[Path]:
        """Remove ``paths`` on the main rank once every rank has read what it needs; the paths removed."""
        if is_distributed():
            torch.distributed.barrier()
        if not paths or not is_main_process():
            return paths
        for path in paths:
            path.unlink(missing_ok=True)
        logger.debug(f"{self.stage}: removed {what}: {[str(p) for p in paths]}")
        return paths

    def _log(self, message: str, level: int = logging.INFO) -> None:
        if is_main_process():
            logger.log(level, message)

    # --- use -------------------------------------------------------------------------------------------------------
    def attach(self, trainer: Engine, load_dict: Mapping[str, Any], saver: AtomicCheckpointSaver | None = None) -> None:
        """When resuming, load :attr:`load_path` into ``load_dict`` as ``trainer`` starts (strictly: the entries and
        the networks must match; the settings and geometry in ``load_dict`` are checked again).

        Args:
            trainer: the stage's trainer.
            load_dict: what the stage's checkpoints hold (the saver's ``save_dict``).
            saver: the stage's epoch-checkpoint saver: the latest epoch checkpoint is counted as its own, so it is
                replaced when the next one is written instead of staying behind.
        """
        if self.action != RESUME:
            return
        StrictCheckpointLoader(self._load_path, load_dict, map_location=self.map_location).attach(trainer)
        if saver is not None and self._adopt is not None and saver.saves_interval_checkpoints:
            saver.adopt_interval_checkpoint(self._adopt[1], self._adopt[0])

    def run(self, trainer: Engine) -> None:
        """``trainer.run()``, unless the stage is skipped."""
        if self.trains:
            trainer.run()

    def __repr__(self) -> str:
        decided = self._action or "undecided"
        return f"StageResume({self.stage!r}, resume={self.resume}, {decided}, load_path={self._load_path})"
