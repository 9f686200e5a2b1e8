"""Exact resumption for MONAI trainers: per-iteration seeding, per-epoch data seeding, mid-epoch replay."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from monai.data.utils import set_rnd
from torch.utils.data import DataLoader

from monai_car.utils.checkpoint import CheckpointKeyError
from monai_car.utils.distributed import get_rank
from monai_car.utils.rng import capture_rng_states, derive_seed, isolated_rng, restore_rng_states

from .utils import check_has_batches

__all__ = ["ResumableTrainerMixin"]

_MAX_NP_SEED = 2**32


class ResumableTrainerMixin:
    """Makes a MONAI ``Trainer`` reproducible from one seed and resumable to the exact same numbers.

    Mixed in before the MONAI base class (``class T(ResumableTrainerMixin, SupervisedTrainer)``); the subclass calls
    :meth:`_init_resumable` after the base ``__init__`` and runs each iteration inside :meth:`iteration_rng`.

    What makes a run stopped after ``N`` iterations and resumed from its checkpoint repeat the uninterrupted run:

    - **Per-iteration randomness** (dropout, G's noise, ...) runs under torch's global generator seeded with
      ``derive_seed(seed, "iteration", iteration, rank)`` and restored afterwards, so it depends on nothing that
      happened in between (validation runs, data loading, other handlers).
    - **Data order and augmentation** are seeded per epoch (and rank) just before the epoch's data iterator is
      created: the data loader's ``generator`` (or, without one, torch's global generator, as ignite's
      ``DeterministicEngine`` does) and the dataset's MONAI random transforms (``set_rnd``; with workers, MONAI's
      ``DataLoader`` seeds them per worker from the loader's base seed). A ``DistributedSampler`` orders by its own
      seed and the epoch.
    - **Mid-epoch resumption** replays the epoch's first ``iteration % epoch_length`` batches (loading them without
      training), so that the next batch, and the workers' augmentation state, are those of the uninterrupted run.
    - The engine's ``state_dict`` holds the seed and the global RNG states (python, numpy, torch, CUDA); loading
      checks the seed and restores the states; unexpected keys are an error.

    Exactness needs deterministic kernels (CPU, or ``torch.use_deterministic_algorithms`` on GPU), ``epoch_length ==
    len(data_loader)`` and non-persistent workers.
    """

    seed: int
    seed_data: bool

    def _init_resumable(self, seed: int, seed_data: bool = True) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
        self.seed = seed
        self.seed_data = bool(seed_data)
        self.state.seed = seed  # type: ignore[attr-defined]
        self.state.rng_states = None  # type: ignore[attr-defined]
        keys = self._state_dict_user_keys  # type: ignore[attr-defined]
        for key in ("seed", "rng_states"):
            if key not in keys:
                keys.append(key)

    def check_has_batches(self) -> None:
        """Refuse to train on a data loader without batches (MONAI's ``Workflow.run`` would warn, train nothing and
        return, leaving an earlier run's checkpoints in place as if they were new).

        Raises:
            ValueError: naming the causes (an empty training split; fewer cases than a batch with ``drop_last``).
        """
        check_has_batches(
            self,
            "the training data loader",
            "Give it at least one batch: a non-empty training split, and with drop_last=True at least batch_size "
            "cases (per rank under DDP).",
        )

    def iteration_seed(self, iteration: int, stream: str = "iteration") -> int:
        """The seed of ``iteration`` on this rank for a named random ``stream``."""
        return derive_seed(self.seed, stream, int(iteration), get_rank())

    def iteration_rng(self, engine: Any) -> Any:
        """Context manager: torch's global generator seeded for ``engine.state.iteration`` (restored on exit)."""
        return isolated_rng(self.iteration_seed(engine.state.iteration), engine.state.device)

    # --- checkpointing --------------------------------------------------------------------------------------------
    def state_dict(self) -> Any:
        """ignite's engine state (iteration, epoch length, max epochs) plus the seed and the global RNG states."""
        self.state.rng_states = capture_rng_states()  # type: ignore[attr-defined]
        return super().state_dict()  # type: ignore[misc]

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore the engine state and the RNG states.

        Raises:
            CheckpointKeyError: on keys this engine does not save, or missing ones.
            ValueError: when the checkpoint was trained with another seed (it would not continue the same run).
        """
        allowed = set(super().state_dict()) | {"iteration", "epoch", "max_epochs", "max_iters"}  # type: ignore[misc]
        unexpected = sorted(set(state_dict) - allowed)
        missing = sorted(k for k in ("epoch_length", "seed", "rng_states") if k not in state_dict)
        if unexpected or missing:
            raise CheckpointKeyError(
                f"{type(self).__name__} state: missing keys {missing}, unexpected keys {unexpected}; the checkpoint's "
                "'trainer' entry comes from another kind of engine."
            )
        if int(state_dict["seed"]) != self.seed:
            raise ValueError(
                f"the checkpoint was trained with seed={state_dict['seed']} but this {type(self).__name__} has "
                f"seed={self.seed}; build the trainer with seed={state_dict['seed']} (--seed {state_dict['seed']} in "
                "the LIDC bundle) to resume the same run."
            )
        super().load_state_dict(state_dict)  # type: ignore[misc]
        restore_rng_states(state_dict["rng_states"])

    # --- data: per-epoch seeding and mid-epoch replay (ignite's own extension points, as DeterministicEngine) ------
    def _setup_dataloader_iter(self) -> None:
        loader = self.state.dataloader  # type: ignore[attr-defined]
        if self.seed_data and isinstance(loader, DataLoader):
            epoch = max(int(self.state.epoch), 1)  # type: ignore[attr-defined]
            data_seed = derive_seed(self.seed, "data", epoch, get_rank())
            if loader.generator is not None:
                loader.generator.manual_seed(data_seed)
            else:
                torch.manual_seed(data_seed)
            set_rnd(loader.dataset, seed=derive_seed(self.seed, "transforms", epoch, get_rank()) % _MAX_NP_SEED)
        super()._setup_dataloader_iter()  # type: ignore[misc]

    def _setup_engine(self) -> None:
        loader = self.state.dataloader  # type: ignore[attr-defined]
        epoch_length = self.state.epoch_length  # type: ignore[attr-defined]
        if self.seed_data and isinstance(loader, DataLoader) and epoch_length is not None:
            if epoch_length != len(loader):
                warnings.warn(
                    f"epoch_length ({epoch_length}) differs from len(data_loader) ({len(loader)}): epochs then span "
                    "data-loader passes unevenly and a resumed run is not guaranteed to see the same batches.",
                    stacklevel=2,
                )
        super()._setup_engine()  # type: ignore[misc]
        skip = int(self._init_iter or 0)  # type: ignore[attr-defined]
        if skip > 0 and self.state.dataloader is not None:  # type: ignore[attr-defined]
            self.logger.info(  # type: ignore[attr-defined]
                f"Resuming in the middle of epoch {self.state.epoch}: replaying its first {skip} batches."  # type: ignore[attr-defined]
            )
            for i in range(skip):
                try:
                    next(self._dataloader_iter)  # type: ignore[attr-defined]
                except StopIteration as e:
                    raise RuntimeError(
                        f"the data loader ran out after {i} batches while replaying {skip} to resume mid-epoch; it is "
                        "shorter than when the checkpoint was written."
                    ) from e
