"""MONAI's CheckpointSaver, writing every checkpoint atomically."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai.handlers import CheckpointSaver
from monai.utils import IgniteInfo, min_version, optional_import

from monai_car.utils.atomic import atomic_file

DiskSaver, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "DiskSaver")
Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["AtomicCheckpointSaver"]


class _AtomicDiskSaver(DiskSaver):
    """ignite's DiskSaver writing atomically (temp file in the same folder, then ``os.replace``), MONAI's
    fixed-filename option, and removals deferred until the next save succeeds.

    The temp file comes from :func:`monai_car.utils.atomic.atomic_file`, so a checkpoint gets the permissions of a
    file made by ``open()`` (``0o666 & ~umask``). ignite's own atomic save (0.5) uses a 0600 ``NamedTemporaryFile``
    and adds group/other read *after* the rename: 0644 whatever the umask, and briefly 0600 under the final name.

    ignite's ``Checkpoint`` removes the checkpoint it replaces *before* writing the new one (and MONAI's final saver
    deletes the previous final file first); if that write then fails, the last good checkpoint would be gone. Here a
    removal only takes effect once a later save has been written.
    """

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True)
        self.filename = filename
        self._pending_removals: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        name = self.filename or filename
        super().__call__(checkpoint=checkpoint, filename=name, metadata=metadata)
        pending, self._pending_removals = self._pending_removals, []
        for old in pending:
            if old != name and (self.dirname / old).exists():
                super().remove(old)

    def remove(self, filename: str) -> None:
        self._pending_removals.append(self.filename or filename)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        # overrides ignite's (private) atomic writer, called by DiskSaver.__call__ with torch.save (xm.save on XLA)
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            func(checkpoint, f, **self.kwargs)


class AtomicCheckpointSaver(CheckpointSaver):
    """:class:`monai.handlers.CheckpointSaver` whose files are written atomically.

    MONAI's saver writes in place (``atomic=False``), so a crash or a full disk during ``torch.save`` leaves a
    truncated checkpoint under the final name. This subclass keeps every option of MONAI's (interval, final and
    key-metric checkpoints, ``key_metric_negative_sign`` for lower-is-better metrics such as GED, fixed file names,
    rank-0-only saving under DDP) and swaps in a saver that serialises to a temporary file in the same folder and then
    renames it over the destination.

    Iteration-level checkpoints that fall on the last iteration of an epoch are written after the epoch's
    ``EPOCH_COMPLETED`` handlers (LR schedulers, validation, ...), not before: a checkpoint taken before them would
    resume into the next epoch without them ever having run (e.g. a learning-rate decay silently skipped).

    Args:
        save_dir: the output folder.
        save_dict: name -> object with ``state_dict()`` (networks, optimizers, schedulers, the trainer, the
            discriminator schedule ...; see ``RefinementTrainer.get_checkpoint_dict``).
        kwargs: every other argument of :class:`monai.handlers.CheckpointSaver`.
    """

    def __init__(self, save_dir: str, save_dict: dict, **kwargs: Any) -> None:
        if not isinstance(save_dict, Mapping) or not save_dict:
            raise ValueError("save_dict must be a non-empty mapping of names to objects with state_dict().")
        for name, obj in save_dict.items():
            if not callable(getattr(obj, "state_dict", None)):
                raise TypeError(f"save_dict[{name!r}] ({type(obj).__name__}) has no state_dict() method.")
        super().__init__(save_dir=save_dir, save_dict=dict(save_dict), **kwargs)
        filenames = {
            "_final_checkpoint": kwargs.get("final_filename"),
            "_key_metric_checkpoint": kwargs.get("key_metric_filename"),
            "_interval_checkpoint": None,
        }
        for attr, filename in filenames.items():
            checkpoint = getattr(self, attr)
            if checkpoint is not None:
                checkpoint.save_handler = _AtomicDiskSaver(dirname=self.save_dir, filename=filename)

    def state_dict(self) -> dict:
        """The key-metric history (scores and file names of the best checkpoints), so that a resumed run keeps
        selecting against the best model so far instead of overwriting it with the first new validation. Put the saver
        in the trainer's checkpoint (``trainer.get_checkpoint_dict({"best_model_saver": saver})``)."""
        if self._key_metric_checkpoint is None:
            raise ValueError("this saver tracks no key metric (save_key_metric=False): there is no state to save.")
        return dict(self._key_metric_checkpoint.state_dict())

    @property
    def saves_interval_checkpoints(self) -> bool:
        """Whether this saver writes interval (epoch or iteration) checkpoints (``save_interval > 0``)."""
        return self._interval_checkpoint is not None

    def adopt_interval_checkpoint(self, path: str | os.PathLike, step: int) -> None:
        """Count an existing interval checkpoint as one this saver wrote, so it is replaced like its own.

        A run resumed from its latest epoch checkpoint starts with a new saver that knows none of the files the
        interrupted run wrote: without this, the checkpoint it resumed from would stay beside the new ones whatever
        ``n_saved`` says. Adopted, it is removed once ``n_saved`` newer ones are written (after the next one, with
        ``n_saved=1``).

        Args:
            path: the checkpoint file, in this saver's ``save_dir``.
            step: its epoch (``epoch_level=True``) or iteration: the number in its name.

        Raises:
            ValueError: this saver writes no interval checkpoints, or ``path`` is not in its folder.
        """
        if self._interval_checkpoint is None:
            raise ValueError("this saver writes no interval checkpoints (save_interval=0): there is nothing to adopt.")
        path = Path(path)
        if path.parent.resolve() != Path(self.save_dir).resolve():
            raise ValueError(f"{str(path)!r} is not in this saver's folder {self.save_dir!r}.")
        saved = [(p, f) for p, f in self._interval_checkpoint.state_dict()["_saved"] if f != path.name]
        self._interval_checkpoint.load_state_dict({"_saved": sorted([*saved, (int(step), path.name)])})

    def interval_completed(self, engine: Engine) -> None:
        """Save now, or, on the last iteration of an epoch, once that epoch's ``EPOCH_COMPLETED`` handlers have run."""
        epoch_length = engine.state.epoch_length
        if self.epoch_level or not epoch_length or engine.state.iteration % epoch_length != 0:
            super().interval_completed(engine)
            return

        def _save_after_epoch(e: Engine) -> None:
            e.remove_event_handler(_save_after_epoch, Events.EPOCH_COMPLETED)
            super(AtomicCheckpointSaver, self).interval_completed(e)

        engine.add_event_handler(Events.EPOCH_COMPLETED, _save_after_epoch)  # appended: runs after the others
