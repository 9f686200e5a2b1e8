"""When the discriminator D is updated during stage 2: in cycles, and not while it is too accurate."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from monai.utils import IgniteInfo, min_version, optional_import

from monai_car.utils.checkpoint import CheckpointKeyError
from monai_car.utils.validation import check_non_negative_int, check_positive_int

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["DiscriminatorSchedule"]

_CONFIG_KEYS = ("update_iterations", "frozen_iterations", "accuracy_cap", "start_with_update")
_COUNTER_KEYS = (
    "num_updates",
    "num_frozen",
    "num_capped",
    "last_accuracy",
    "phase_accuracies",
    "phase_sum",
    "phase_count",
    "phase_updates",
)
_IDLE_MARGIN = 0.02


class DiscriminatorSchedule:
    """D updates in cycles of ``update_iterations`` updating then ``frozen_iterations`` frozen (CAR: 50 on, 200 off),
    and, optionally, no update while D's accuracy is at or above ``accuracy_cap`` (the reference code: 0.85).

    The trainer asks :meth:`should_update` once per iteration; the cycle is a function of the (1-based) iteration
    number, so it survives a resume unchanged, and the counters are part of :meth:`state_dict` so that a checkpoint
    holds them. As an ignite handler, :meth:`attach` hands the schedule to a
    :class:`~monai_car.engines.RefinementTrainer` and logs the counters at the end of each epoch.

    D's balanced accuracy (the mean of its accuracy on reals and on fakes, measured before each update) is averaged
    over each update phase: :attr:`phase_accuracies` holds one value per finished phase, each logged when its phase
    ends. A D that stays a constant classifier gives G no signal; when every phase of a stage stays within 0.02 of 0.5,
    a warning is logged at the end of the run (:meth:`idle_warning`).

    Args:
        update_iterations: iterations per cycle in which D is updated (> 0).
        frozen_iterations: iterations per cycle in which D is frozen (>= 0; 0 updates D every iteration).
        accuracy_cap: skip D's update when its accuracy (on the current batch, before the update) is ``>=`` this; None
            disables the cap.
        start_with_update: whether a cycle starts with the updating phase (otherwise with the frozen one).

    Example::

        schedule = DiscriminatorSchedule(50, 200, accuracy_cap=0.85)
        trainer = RefinementTrainer(..., discriminator_schedule=schedule)
        # iterations 1-50, 251-300, ... update D (unless its accuracy >= 0.85)
    """

    def __init__(
        self,
        update_iterations: int = 50,
        frozen_iterations: int = 200,
        accuracy_cap: float | None = 0.85,
        start_with_update: bool = True,
    ) -> None:
        check_positive_int(update_iterations, "update_iterations")
        check_non_negative_int(frozen_iterations, "frozen_iterations")
        if accuracy_cap is not None and not 0.0 < float(accuracy_cap) <= 1.0:
            raise ValueError(f"accuracy_cap must be in (0, 1] or None, got {accuracy_cap!r}.")
        self.update_iterations = update_iterations
        self.frozen_iterations = frozen_iterations
        self.accuracy_cap = None if accuracy_cap is None else float(accuracy_cap)
        self.start_with_update = bool(start_with_update)
        self.num_updates = 0
        self.num_frozen = 0
        self.num_capped = 0
        self.last_accuracy: float | None = None
        self.phase_accuracies: list[float] = []
        self.phase_sum = 0.0
        self.phase_count = 0
        self.phase_updates = 0
        self.logger = logging.getLogger(__name__)

    @property
    def cycle_length(self) -> int:
        """Iterations per cycle."""
        return self.update_iterations + self.frozen_iterations

    def in_update_phase(self, iteration: int) -> bool:
        """Whether the 1-based ``iteration`` falls in the updating part of its cycle (ignoring the accuracy cap)."""
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 1:
            raise ValueError(f"iteration must be a positive int (1-based, as ignite counts), got {iteration!r}.")
        position = (iteration - 1) % self.cycle_length
        if self.start_with_update:
            return position < self.update_iterations
        return position >= self.frozen_iterations

    def should_update(self, iteration: int, accuracy: float | None = None) -> bool:
        """Decide (and count) whether D is updated at ``iteration``.

        Args:
            iteration: the trainer's 1-based iteration.
            accuracy: D's accuracy in ``[0, 1]`` on the current batch before its update (all ranks' mean under DDP,
                so that every rank decides the same); ignored without a cap.

        Raises:
            ValueError: when a cap is set and ``accuracy`` is missing, NaN or outside ``[0, 1]``.
        """
        if accuracy is not None:
            accuracy = float(accuracy)
            self.last_accuracy = accuracy
        if not self.in_update_phase(iteration):
            self.num_frozen += 1
            return False
        update = self._decide(iteration, accuracy)
        if accuracy is not None and accuracy == accuracy:  # not NaN
            self.phase_sum += accuracy
            self.phase_count += 1
        self.phase_updates += int(update)
        position = (iteration - 1) % self.cycle_length
        last = self.update_iterations - 1 if self.start_with_update else self.cycle_length - 1
        if position == last:
            self.close_phase(iteration)
        return update

    def _decide(self, iteration: int, accuracy: float | None) -> bool:
        if self.accuracy_cap is not None:
            if accuracy is None or not 0.0 <= accuracy <= 1.0:
                raise ValueError(
                    f"DiscriminatorSchedule has accuracy_cap={self.accuracy_cap} but got accuracy={accuracy!r} at "
                    f"iteration {iteration}; pass D's accuracy in [0, 1] (or set accuracy_cap=None)."
                )
            if accuracy >= self.accuracy_cap:
                self.num_capped += 1
                return False
        self.num_updates += 1
        return True

    def close_phase(self, iteration: int | None = None) -> float | None:
        """End the running update phase: record (and log) its mean balanced accuracy; None when it saw no accuracy."""
        if self.phase_count == 0:
            self.phase_updates = 0
            return None
        mean = self.phase_sum / self.phase_count
        self.phase_accuracies.append(mean)
        where = "" if iteration is None else f" (to iteration {iteration})"
        self.logger.info(
            f"D update phase {len(self.phase_accuracies)}{where}: mean balanced accuracy {mean:.3f} over "
            f"{self.phase_count} iterations, {self.phase_updates} updates."
        )
        self.phase_sum, self.phase_count, self.phase_updates = 0.0, 0, 0
        return mean

    def idle_warning(self) -> str | None:
        """A warning text when every finished update phase kept D's balanced accuracy within 0.02 of 0.5, else None."""
        if not self.phase_accuracies or any(abs(a - 0.5) > _IDLE_MARGIN for a in self.phase_accuracies):
            return None
        lo, hi = min(self.phase_accuracies), max(self.phase_accuracies)
        return (
            f"D's balanced accuracy stayed within {_IDLE_MARGIN} of 0.5 in all {len(self.phase_accuracies)} update "
            f"phases of this stage ({lo:.3f}-{hi:.3f}): D never learned to tell G's samples from the graders' masks, "
            "so the adversarial loss gave G no signal. Raise D's learning rate (stage2#lr_d) or update it more often "
            "(stage2#d_update_iterations / stage2#d_frozen_iterations)."
        )

    def state_dict(self) -> dict[str, Any]:
        """The configuration and the counters (the phase accuracies included)."""
        out = {k: getattr(self, k) for k in _CONFIG_KEYS + _COUNTER_KEYS}
        out["phase_accuracies"] = list(self.phase_accuracies)
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the counters; the saved configuration must equal this one.

        Raises:
            CheckpointKeyError: on missing or unexpected keys.
            ValueError: when the saved configuration (cycle lengths, cap) differs from this schedule's.
        """
        expected = set(_CONFIG_KEYS + _COUNTER_KEYS)
        missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        if missing or unexpected:
            raise CheckpointKeyError(
                f"DiscriminatorSchedule state: missing keys {missing}, unexpected keys {unexpected}; it must come "
                "from DiscriminatorSchedule.state_dict()."
            )
        differ = {k: (state_dict[k], getattr(self, k)) for k in _CONFIG_KEYS if state_dict[k] != getattr(self, k)}
        if differ:
            raise ValueError(
                "the checkpoint's DiscriminatorSchedule was configured differently (saved, current): "
                f"{differ}; build the schedule with the saved settings to resume exactly."
            )
        self.num_updates = int(state_dict["num_updates"])
        self.num_frozen = int(state_dict["num_frozen"])
        self.num_capped = int(state_dict["num_capped"])
        last = state_dict["last_accuracy"]
        self.last_accuracy = None if last is None else float(last)
        self.phase_accuracies = [float(a) for a in state_dict["phase_accuracies"]]
        self.phase_sum = float(state_dict["phase_sum"])
        self.phase_count = int(state_dict["phase_count"])
        self.phase_updates = int(state_dict["phase_updates"])

    def attach(self, engine: Engine) -> None:
        """Hand this schedule to ``engine`` (a :class:`~monai_car.engines.RefinementTrainer`) and log it per epoch."""
        setter = getattr(engine, "set_discriminator_schedule", None)
        if not callable(setter):
            raise TypeError(
                f"DiscriminatorSchedule attaches to a trainer with set_discriminator_schedule() (RefinementTrainer), "
                f"not to {type(engine).__name__}."
            )
        setter(self)
        self.register_logging(engine)

    def register_logging(self, engine: Engine) -> None:
        """Log the counters per epoch and the phase accuracies at the end of ``engine``'s run (once per engine; the
        :class:`~monai_car.engines.RefinementTrainer` calls this for the schedule it uses)."""
        if engine.has_event_handler(self._log, Events.EPOCH_COMPLETED):
            return
        self.logger = engine.logger
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._log)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def detach_logging(self, engine: Engine) -> None:
        """Undo :meth:`register_logging` (when the trainer's schedule is replaced)."""
        for handler, event in ((self._log, Events.EPOCH_COMPLETED), (self._completed, Events.COMPLETED)):
            if engine.has_event_handler(handler, event):
                engine.remove_event_handler(handler, event)

    def _completed(self, engine: Engine) -> None:
        """End of the stage: close a partial phase, keep the phases in ``engine.state``, warn when D stayed idle."""
        self.close_phase(int(engine.state.iteration))
        engine.state.d_phase_accuracies = list(self.phase_accuracies)
        warning = self.idle_warning()
        if warning is not None:
            self.logger.warning(warning)

    def _log(self, engine: Engine) -> None:
        self.logger.info(
            f"Epoch[{engine.state.epoch}] D schedule: {self.num_updates} updates, {self.num_frozen} frozen, "
            f"{self.num_capped} skipped at accuracy >= {self.accuracy_cap}; last D accuracy {self.last_accuracy}."
        )
