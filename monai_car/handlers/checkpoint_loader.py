"""Strict checkpoint loading as an ignite handler: a mismatch is an error that names the keys."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from monai.utils import IgniteInfo, min_version, optional_import

from monai_car.utils.checkpoint import load_checkpoint

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["StrictCheckpointLoader"]


class StrictCheckpointLoader:
    """Load a checkpoint into ``load_dict`` when the engine starts; entries must match exactly.

    Like :class:`monai.handlers.CheckpointLoader` (same arguments and ``max_epochs`` handling), but built on
    :func:`monai_car.utils.load_checkpoint`: the checkpoint's entries must be exactly ``load_dict``'s names (ignite's
    loader ignores unexpected ones) and every network must match parameter for parameter; otherwise a
    :class:`~monai_car.utils.checkpoint.CheckpointKeyError` names the missing, unexpected or mismatched keys, and
    nothing is loaded. A missing file is an error too (never a silent start from scratch). A
    :class:`~monai_car.utils.TrainingGeometry` in ``load_dict`` is checked against the checkpoint's (a run with other
    settings is refused; a checkpoint written without one resumes with a warning).

    Args:
        load_path: the checkpoint file.
        load_dict: name -> object with ``load_state_dict`` (the same names the checkpoint was saved with, e.g.
            ``RefinementTrainer.get_checkpoint_dict()``).
        name: logger name; the engine's logger when None.
        map_location: passed to ``torch.load`` (e.g. ``{"cuda:0": "cuda:1"}`` or ``"cpu"``).
        strict: see above; ``False`` loads only the common entries and warns about the rest.
    """

    def __init__(
        self,
        load_path: str | os.PathLike,
        load_dict: Mapping[str, Any],
        name: str | None = None,
        map_location: Any = None,
        strict: bool = True,
    ) -> None:
        if load_path is None or str(load_path) == "":
            raise ValueError("load_path must name a checkpoint file.")
        if not isinstance(load_dict, Mapping) or not load_dict:
            raise ValueError("load_dict must be a non-empty mapping of names to objects with load_state_dict().")
        self.load_path = str(load_path)
        self.load_dict = dict(load_dict)
        self.map_location = map_location
        self.strict = strict
        self._name = name
        self.logger = logging.getLogger(name)

    def attach(self, engine: Engine) -> None:
        """Load at ``Events.STARTED`` of ``engine``."""
        if self._name is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Load the checkpoint (keeping the engine's own ``max_epochs``).

        Raises:
            FileNotFoundError, CheckpointKeyError: see :func:`monai_car.utils.load_checkpoint`.
            ValueError: when the checkpoint's epoch is beyond the engine's ``max_epochs``.
        """
        prior_max_epochs = engine.state.max_epochs
        load_checkpoint(self.load_path, self.load_dict, map_location=self.map_location, strict=self.strict)
        if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
            raise ValueError(
                f"the checkpoint {self.load_path!r} is at epoch {engine.state.epoch}, beyond the engine's max_epochs "
                f"({prior_max_epochs}); construct the trainer with a larger max_epochs to train further."
            )
        engine.state.max_epochs = prior_max_epochs
        self.logger.info(
            f"Restored {sorted(self.load_dict)} from {self.load_path} (iteration {engine.state.iteration}, "
            f"epoch {engine.state.epoch})."
        )
