from __future__ import annotations

from .checkpoint import (
    CheckpointKeyError,
    capture_rng_states,
    derive_seed,
    load_checkpoint,
    load_network_weights,
    restore_rng_states,
    save_checkpoint,
)
from .distributed import (
    all_reduce_mean,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    unwrap_module,
    wrap_ddp,
)
from .enums import CarKeys
from .uncertainty import (
    calibration_entropy,
    entropy,
    foreground_probability,
    mean_sample_entropy,
    mutual_information,
    sample_mean_entropy,
    sample_variance,
    uncertainty_maps,
)

__all__ = [
    "CarKeys",
    "CheckpointKeyError",
    "all_reduce_mean",
    "capture_rng_states",
    "derive_seed",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "load_checkpoint",
    "load_network_weights",
    "restore_rng_states",
    "save_checkpoint",
    "unwrap_module",
    "wrap_ddp",
    "calibration_entropy",
    "entropy",
    "foreground_probability",
    "mean_sample_entropy",
    "mutual_information",
    "sample_mean_entropy",
    "sample_variance",
    "uncertainty_maps",
]
