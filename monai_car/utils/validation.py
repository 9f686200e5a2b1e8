"""Input checks and conversions at the library's public entry points, written once.

Conversions go through MONAI's :func:`~monai.utils.type_conversion.convert_to_tensor` /
:func:`~monai.utils.type_conversion.convert_to_numpy` (a ``MetaTensor`` becomes a plain tensor or array; its metadata
is dropped); the checks raise ``TypeError`` / ``ValueError`` whose message names the argument and says what to give.
Validate at the boundary (a public function's arguments) and pass plain, checked values inwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.utils.type_conversion import convert_to_numpy, convert_to_tensor

__all__ = [
    "PROBABILITY_TOLERANCE",
    "as_numpy",
    "as_plain_tensor",
    "check_bool",
    "check_non_negative_int",
    "check_positive_int",
    "check_probabilities",
    "check_validation_schedule",
]

PROBABILITY_TOLERANCE = 1e-4
"""How far outside ``[0, 1]`` a probability may stray (float rounding of a softmax) before it is rejected."""


def as_plain_tensor(x: object, name: str) -> torch.Tensor:
    """``x`` as a plain ``torch.Tensor`` (a MONAI ``MetaTensor`` loses its metadata; no copy otherwise).

    Raises:
        TypeError: when ``x`` is not a tensor.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; convert it with torch.as_tensor.")
    return convert_to_tensor(x, track_meta=False)


def as_numpy(x: object, name: str) -> np.ndarray:
    """A tensor (``MetaTensor`` included, on any device) or array as a numpy array, or a clear ``TypeError``."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}.")
    if isinstance(x, torch.Tensor):
        x = x.detach()
    return np.asarray(convert_to_numpy(x))


_TRUE_WORDS = ("true", "yes", "1")
_FALSE_WORDS = ("false", "no", "0")


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a bool: a bool, ``0`` / ``1``, or one of the words ``true`` / ``false`` (also ``yes`` / ``no``,
    any case), as ``python -m monai.bundle run ... --resume true`` passes it (python-fire turns ``True`` into a bool
    but ``true`` into a string, and ``bool("false")`` is True); else ``ValueError`` naming ``name``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    raise ValueError(f"{name} must be true or false, got {value!r}.")


def check_positive_int(value: Any, name: str) -> int:
    """``value`` if it is an int ``>= 1`` (a ``bool`` is not), else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def check_non_negative_int(value: Any, name: str) -> int:
    """``value`` if it is an int ``>= 0`` (a ``bool`` is not), else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}.")
    return int(value)


def check_validation_schedule(max_epochs: Any, val_interval: Any, section: str = "") -> None:
    """Refuse a training that would never validate: ``max_epochs < val_interval``.

    Validation every ``val_interval`` epochs selects and writes the best model; a run shorter than one interval
    writes none and ends without error, leaving an earlier run's best model in place as if it were this run's. Call
    it before training starts.

    Args:
        max_epochs: the epochs to train.
        val_interval: validate every this many epochs.
        section: the config section of both options, for the message (``"stage2"``: ``stage2#max_epochs`` and
            ``stage2#val_interval``; a MONAI config expression cannot hold a ``#`` itself).

    Raises:
        ValueError: a non-positive value, or ``max_epochs < val_interval``; the message names both options.
    """
    prefix = f"{section}#" if section else ""
    max_epochs_name, val_interval_name = f"{prefix}max_epochs", f"{prefix}val_interval"
    max_epochs = check_positive_int(max_epochs, max_epochs_name)
    val_interval = check_positive_int(val_interval, val_interval_name)
    if max_epochs < val_interval:
        raise ValueError(
            f"{max_epochs_name} ({max_epochs}) is shorter than {val_interval_name} ({val_interval}): the run would "
            "never validate, so it would select and write no best model (an earlier run's would be left as if it "
            f"were new). Set --{val_interval_name} {max_epochs} or less, or --{max_epochs_name} {val_interval} or "
            "more."
        )


def check_probabilities(
    x: object,
    name: str,
    ndims: Sequence[int] | None = None,
    layout: str = "",
    min_ndim: int = 1,
    check_range: bool = True,
) -> Any:
    """Check that ``x`` holds finite floating-point probabilities; return it unwrapped (tensor stays a tensor).

    Args:
        x: a tensor (``MetaTensor`` included) or numpy array.
        name: the argument's name in messages.
        ndims: the allowed numbers of dimensions (None: any ``>= min_ndim``).
        layout: the expected layout for the message, e.g. ``"(S, K, *spatial)"``.
        min_ndim: the least number of dimensions when ``ndims`` is None.
        check_range: also require values in ``[0, 1]`` (within :data:`PROBABILITY_TOLERANCE`).

    Returns:
        a plain ``torch.Tensor`` for tensor input, a numpy array for array input (same dtype).

    Raises:
        TypeError: when ``x`` is neither a tensor nor an array.
        ValueError: on a wrong number of dimensions, an empty or non-floating input, NaN/inf, or values outside
            ``[0, 1]``.
    """
    if isinstance(x, torch.Tensor):
        a: Any = convert_to_tensor(x, track_meta=False)
        floating, finite = a.is_floating_point(), bool(torch.isfinite(a).all()) if a.is_floating_point() else True
    elif isinstance(x, np.ndarray):
        a = x
        floating = np.issubdtype(a.dtype, np.floating)
        finite = bool(np.isfinite(a).all()) if floating else True
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}.")
    shape = tuple(a.shape)
    want = f" {layout}" if layout else ""
    if (ndims is not None and a.ndim not in tuple(ndims)) or (ndims is None and a.ndim < min_ndim) or 0 in shape:
        dims = f"{tuple(ndims)} dims" if ndims is not None else f"at least {min_ndim} dims"
        raise ValueError(f"{name} must be{want} probabilities with {dims} and no empty axis, got shape {shape}.")
    if not floating:
        raise ValueError(f"{name} must be floating-point probabilities, got dtype {a.dtype}.")
    if not finite:
        raise ValueError(f"{name} holds NaN or inf values; check the network outputs.")
    if check_range:
        lo, hi = float(a.min()), float(a.max())
        if lo < -PROBABILITY_TOLERANCE or hi > 1 + PROBABILITY_TOLERANCE:
            raise ValueError(
                f"{name} must be probabilities in [0, 1] (softmax outputs), got values in [{lo:.4g}, {hi:.4g}]; "
                "apply softmax to logits first."
            )
    return a
