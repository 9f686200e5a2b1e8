from __future__ import annotations

from .atomic import (
    atomic_dir,
    atomic_file,
    make_staging_dir,
    remove_stale_staging,
    replace_dir,
    write_bytes_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)
from .checkpoint import CheckpointKeyError, load_checkpoint, load_network_weights, save_checkpoint
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
from .enums import CarKeys, RefinementKeys
from .geometry import GEOMETRY_KEY, CheckpointGeometryError, TrainingGeometry
from .rng import (
    capture_rng_states,
    derive_seed,
    get_torch_rng_state,
    isolated_rng,
    restore_rng_states,
    set_torch_rng_state,
)
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
from .validation import check_validation_schedule

__all__ = [
    "CarKeys",
    "CheckpointGeometryError",
    "CheckpointKeyError",
    "GEOMETRY_KEY",
    "RefinementKeys",
    "all_reduce_mean",
    "capture_rng_states",
    "check_validation_schedule",
    "derive_seed",
    "get_rank",
    "get_torch_rng_state",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "isolated_rng",
    "load_checkpoint",
    "load_network_weights",
    "restore_rng_states",
    "save_checkpoint",
    "set_torch_rng_state",
    "TrainingGeometry",
    "unwrap_module",
    "wrap_ddp",
    "atomic_dir",
    "atomic_file",
    "make_staging_dir",
    "remove_stale_staging",
    "replace_dir",
    "write_bytes_atomic",
    "write_csv_atomic",
    "write_json_atomic",
    "write_text_atomic",
    "calibration_entropy",
    "entropy",
    "foreground_probability",
    "mean_sample_entropy",
    "mutual_information",
    "sample_mean_entropy",
    "sample_variance",
    "uncertainty_maps",
]
