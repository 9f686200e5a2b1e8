"""A run's output folder, staged: written beside the final folder and published as a whole when the run completes."""

from __future__ import annotations

import atexit
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from monai.utils import IgniteInfo, min_version, optional_import

from monai_car.utils.atomic import make_staging_dir, remove_stale_staging, replace_dir

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["StagedOutputDir"]

logger = logging.getLogger(__name__)


class StagedOutputDir:
    """Ignite handler: every output of one run goes to :attr:`path`, a hidden staging folder beside ``output_dir``,
    which replaces ``output_dir`` as a whole when the engine completes.

    So a failed or killed run never leaves ``output_dir`` mixing two runs (sample sets of the new run beside the
    old run's ``metrics.json``): until the new run completes, ``output_dir`` holds the previous complete run
    untouched. On an exception the staging folder is removed (by this handler's ``EXCEPTION_RAISED`` handler, or at
    interpreter exit when an earlier handler re-raised first) and the exception propagates; after ``kill -9`` it is
    left behind as ``.<name>.tmp-*`` and the next ``StagedOutputDir`` for the same folder removes it (as well as
    set-aside ``.<name>.old-*`` folders). Give the writers (e.g. ``EvaluationReportWriter``, ``SampleSetWriter``)
    :attr:`path` as their output folder, and :meth:`attach` this handler after them, so that it publishes last.

    Args:
        output_dir: the final folder of the run's outputs.

    Attributes:
        path: the staging folder to write into.
        published: whether the run's outputs have been published to ``output_dir``.
    """

    def __init__(self, output_dir: str | Path) -> None:
        if not isinstance(output_dir, (str, Path)) or not str(output_dir):
            raise TypeError(f"output_dir must be a folder path, got {output_dir!r}.")
        self.output_dir = Path(output_dir)
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise FileExistsError(f"{self.output_dir} exists and is not a folder; move it away or set another path.")
        for stale in remove_stale_staging(self.output_dir):
            logger.warning("removed %s, left by an earlier run of %s that did not finish.", stale, self.output_dir)
        self.path = make_staging_dir(self.output_dir)
        self.published = False
        atexit.register(self.discard)  # a run that raised (or was never started) leaves nothing behind

    def attach(self, engine: Engine) -> None:
        """Publish when ``engine`` completes; remove the staging folder if it raises."""
        engine.add_event_handler(Events.COMPLETED, self.publish)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._discard_and_raise)

    def publish(self, engine: Engine | None = None) -> Path:
        """Move the staging folder onto ``output_dir`` (replacing an earlier run's folder as a whole)."""
        if self.published:
            raise RuntimeError(f"{self.output_dir} was already published by this StagedOutputDir; make a new one.")
        replace_dir(self.path, self.output_dir)
        self.published = True
        logger.info("outputs published to %s", self.output_dir)
        return self.output_dir

    def discard(self) -> None:
        """Remove the staging folder unless it was published (also run at interpreter exit)."""
        if not self.published:
            shutil.rmtree(self.path, ignore_errors=True)

    def _discard_and_raise(self, engine: Engine, exc: BaseException) -> None:
        self.discard()
        raise exc
