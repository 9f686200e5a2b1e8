"""Checkpoint files.

- :func:`save_checkpoint` writes ``{name: obj.state_dict()}`` atomically (temp file in the same folder, then
  ``os.replace``), so a crash never leaves a truncated checkpoint behind.
- :func:`load_checkpoint` loads strictly: a missing or unexpected entry (top level, or a network's parameter) is an
  error that names it. The authors' code saved under one name and loaded under another and silently started from
  scratch; here that fails loudly.
- A checkpoint may hold a ``"geometry"`` entry, the settings it was trained with
  (:class:`~monai_car.utils.geometry.TrainingGeometry`); both loaders refuse a run whose settings differ, and load a
  checkpoint written without one with a warning.

- :func:`epoch_checkpoints` / :func:`latest_epoch_checkpoint` find the epoch checkpoints that MONAI's
  ``CheckpointSaver`` (``save_interval``, ``epoch_level=True``) writes as ``<prefix>_checkpoint_epoch=<N>.pt``;
  :func:`read_checkpoint` reads one for inspection.

The random-number-generator states that checkpoints record (and seed derivation) live in :mod:`monai_car.utils.rng`.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from .atomic import atomic_file
from .distributed import unwrap_module
from .geometry import GEOMETRY_KEY, TrainingGeometry, as_training_geometry

__all__ = [
    "load_network_weights",
    "CheckpointKeyError",
    "epoch_checkpoint_name",
    "epoch_checkpoints",
    "latest_epoch_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]


class CheckpointKeyError(KeyError):
    """A checkpoint's entries (or a network's parameters) do not match what is being loaded."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


def _state_dict_of(name: str, obj: Any) -> Any:
    if isinstance(obj, nn.Module):
        return unwrap_module(obj).state_dict()
    if not callable(getattr(obj, "state_dict", None)):
        raise TypeError(f"checkpoint entry {name!r} ({type(obj).__name__}) has no state_dict() method.")
    return obj.state_dict()


def save_checkpoint(path: str | os.PathLike, objects: Mapping[str, Any]) -> Path:
    """Write ``{name: obj.state_dict()}`` to ``path`` atomically.

    The state dicts are serialised to a temporary file in the destination folder, which then replaces ``path``
    (``os.replace``); on failure the temporary file is removed and an existing ``path`` is left untouched. The file
    gets the permissions of one made by ``open()`` (``0o666 & ~umask``; see :mod:`monai_car.utils.atomic`).
    ``DistributedDataParallel`` wrappers are unwrapped, so checkpoints load into plain networks.

    Args:
        path: the checkpoint file (its folder is created).
        objects: named networks, optimizers, schedulers, engines, ... (anything with ``state_dict()``).

    Returns:
        the path written.
    """
    if not isinstance(objects, Mapping) or not objects:
        raise ValueError("objects must be a non-empty mapping of names to objects with state_dict().")
    path = Path(path)
    payload = {str(k): _state_dict_of(str(k), v) for k, v in objects.items()}
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)
    return path


def _check_module(name: str, module: nn.Module, state: Mapping, strict: bool, source: str) -> None:
    module = unwrap_module(module)
    if not isinstance(state, Mapping):
        raise CheckpointKeyError(f"{source}: entry {name!r} is a {type(state).__name__}, not a network state_dict.")
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape
    ]
    if mismatched:
        raise CheckpointKeyError(
            f"{source}: entry {name!r} ({type(module).__name__}) has parameters of other shapes: {mismatched[:10]}"
            f"{' ...' if len(mismatched) > 10 else ''}. The checkpoint comes from a different network configuration; "
            "build the network with the settings it was trained with."
        )
    if strict and (missing or unexpected):
        raise CheckpointKeyError(
            f"{source}: entry {name!r} ({type(module).__name__}) does not match the network: missing keys "
            f"{missing[:20]}{' ...' if len(missing) > 20 else ''}, unexpected keys {unexpected[:20]}"
            f"{' ...' if len(unexpected) > 20 else ''}. The checkpoint comes from a different network configuration "
            "(or was saved under another name); build the network it was trained with."
        )


def _check_optimizer(name: str, optimizer: Optimizer, state: Mapping, source: str) -> None:
    if not isinstance(state, Mapping) or "param_groups" not in state or "state" not in state:
        raise CheckpointKeyError(f"{source}: entry {name!r} is not an optimizer state_dict (no 'param_groups').")
    saved = [len(g["params"]) for g in state["param_groups"]]
    own = [len(g["params"]) for g in optimizer.param_groups]
    if saved != own:
        raise CheckpointKeyError(
            f"{source}: optimizer {name!r} has parameter groups of sizes {own} but the checkpoint has {saved}; "
            "the optimizer must be built over the same network configuration as when it was saved."
        )


def load_checkpoint(
    path: str | os.PathLike,
    objects: Mapping[str, Any],
    map_location: Any = None,
    strict: bool = True,
) -> dict[str, list[str]]:
    """Load a checkpoint written by :func:`save_checkpoint` (or MONAI's / ignite's savers) into ``objects``.

    With ``strict=True`` (the default) the checkpoint's entries must be exactly ``objects``' names, and every
    network's parameter names and shapes must match; otherwise a :class:`CheckpointKeyError` names what is missing,
    unexpected or mismatched, and nothing is loaded (networks and optimizers are all checked before any is loaded;
    another object's own ``load_state_dict`` may still raise part-way). A checkpoint holding a single bare state dict
    (ignite's format for one object) loads into a single object.

    A :class:`~monai_car.utils.geometry.TrainingGeometry` in ``objects`` is checked against the checkpoint's entry of
    that name before anything is loaded (a mismatch raises
    :class:`~monai_car.utils.geometry.CheckpointGeometryError`); a checkpoint written before geometries were stored,
    without that entry, loads with a warning. A checkpoint's geometry entry that ``objects`` lacks is unexpected, like
    any other entry.

    Args:
        path: the checkpoint file.
        objects: the targets, name -> network / optimizer / scheduler / engine / anything with ``load_state_dict``.
        map_location: passed to ``torch.load``.
        strict: see above. With ``strict=False`` only the common entries (and common parameters) are loaded and a
            warning names the rest.

    Returns:
        ``{"missing": [...], "unexpected": [...]}``: the entry names absent from the checkpoint / not loaded (both
        empty with ``strict=True``).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        CheckpointKeyError: on mismatches (see above).
        CheckpointGeometryError: the checkpoint was trained with other settings than a geometry in ``objects``.
    """
    if not isinstance(objects, Mapping) or not objects:
        raise ValueError("objects must be a non-empty mapping of names to objects with load_state_dict().")
    source, checkpoint = _read_checkpoint(path, map_location, "a dict of state dicts")
    for name, obj in objects.items():  # an older checkpoint without a geometry: warn, load the rest
        if isinstance(obj, TrainingGeometry) and name not in checkpoint:
            obj.check(None, source)
    objects = {k: v for k, v in objects.items() if k in checkpoint or not isinstance(v, TrainingGeometry)}
    if len(objects) == 1 and next(iter(objects)) not in checkpoint:
        checkpoint = {next(iter(objects)): checkpoint}
    missing = sorted(set(objects) - set(checkpoint))
    unexpected = sorted(set(checkpoint) - set(objects))
    if strict and (missing or unexpected):
        raise CheckpointKeyError(
            f"{source} does not match the objects to load: missing entries {missing}, unexpected entries "
            f"{unexpected} (checkpoint has {sorted(checkpoint)}). Load it with the same names it was saved with, "
            "or pass strict=False to load only the common entries."
        )
    if missing or unexpected:
        warnings.warn(f"{source}: not loading {missing} (absent) and ignoring {unexpected} (unexpected).", stacklevel=2)
    common = [name for name in objects if name in checkpoint]
    for name in common:  # check everything before loading anything
        obj, state = objects[name], checkpoint[name]
        if isinstance(obj, nn.Module):
            _check_module(name, obj, state, strict, source)
        elif isinstance(obj, Optimizer):
            _check_optimizer(name, obj, state, source)
        elif isinstance(obj, TrainingGeometry):
            obj.check(state, source)
        elif not callable(getattr(obj, "load_state_dict", None)):
            raise TypeError(f"object {name!r} ({type(obj).__name__}) has no load_state_dict() method.")
    for name in common:
        obj, state = objects[name], checkpoint[name]
        if isinstance(obj, nn.Module):
            unwrap_module(obj).load_state_dict(state, strict=strict)
        elif not isinstance(obj, TrainingGeometry):  # checked above; nothing to load
            obj.load_state_dict(state)
    return {"missing": missing, "unexpected": unexpected}


def load_network_weights(
    path: str | os.PathLike,
    network: nn.Module,
    entry: str | None = None,
    map_location: Any = "cpu",
    hint: str = "",
    geometry: TrainingGeometry | Mapping[str, Any] | None = None,
) -> nn.Module:
    """Load one network's weights from a checkpoint, strictly: every parameter name and shape must match.

    Args:
        path: a checkpoint holding ``{entry: state_dict, ...}`` (e.g. a stage-1 checkpoint, from which stage 2 takes
            ``calibration_net``); or, when ``entry`` is ``None``, a bare state dict or ``{name: state_dict,
            "geometry": {...}}`` (``models/model.pt``: its one network beside its geometry).
        network: the network to load into (built with the configuration the checkpoint was trained with).
        entry: the checkpoint entry holding the network's state dict; ``None``: see ``path``.
        map_location: passed to ``torch.load``.
        hint: appended to the missing-file message (e.g. which command writes the checkpoint).
        geometry: this run's settings (a :class:`~monai_car.utils.geometry.TrainingGeometry` or a mapping), checked
            against the checkpoint's ``"geometry"`` entry before loading; a checkpoint without one loads with a
            warning. None: nothing is checked.

    Returns:
        ``network``, loaded.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointGeometryError: the checkpoint was trained with other settings than ``geometry``; the message names
            each with both values and the option to change.
        CheckpointKeyError: no such entry, or parameters missing, unexpected or of another shape (a checkpoint from a
            different network configuration); the message names them.
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
    expected = None if geometry is None else as_training_geometry(geometry)
    source, checkpoint = _read_checkpoint(path, map_location, "a state dict", hint)
    saved = checkpoint.get(GEOMETRY_KEY)
    if isinstance(saved, Mapping):  # a parameter named "geometry" would be a tensor
        checkpoint = {k: v for k, v in checkpoint.items() if k != GEOMETRY_KEY}
    else:
        saved = None
    if expected is not None:
        expected.check(saved, source)
    if entry is not None:
        if entry not in checkpoint:
            raise CheckpointKeyError(f"{source} has no entry {entry!r}; its entries are {sorted(checkpoint)}.")
        checkpoint = checkpoint[entry]
    elif saved is not None:
        if len(checkpoint) != 1:
            raise CheckpointKeyError(
                f"{source} holds the entries {sorted(checkpoint)} besides its geometry; name the network's with entry."
            )
        checkpoint = next(iter(checkpoint.values()))
    _check_module(entry or "network", network, checkpoint, True, source)
    unwrap_module(network).load_state_dict(checkpoint, strict=True)
    return network


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> Mapping[str, Any]:
    """A checkpoint's content, read with ``torch.load(weights_only=True)`` (to inspect it, not to load objects).

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load``.
        mmap: map the file's tensors instead of reading them (for a large checkpoint of which only a few entries
            are looked at).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a torch checkpoint.
        CheckpointKeyError: it does not hold a mapping.
    """
    return _read_checkpoint(path, map_location, "a dict of state dicts", mmap=mmap)[1]


def epoch_checkpoint_name(epoch: int, prefix: str = "") -> str:
    """The file name MONAI's ``CheckpointSaver(file_prefix=prefix, epoch_level=True)`` gives epoch ``epoch``'s
    checkpoint of several objects: ``<prefix>_checkpoint_epoch=<epoch>.pt`` (``checkpoint_epoch=<epoch>.pt``
    without a prefix)."""
    return f"{prefix}_checkpoint_epoch={int(epoch)}.pt" if prefix else f"checkpoint_epoch={int(epoch)}.pt"


def epoch_checkpoints(directory: str | os.PathLike, prefix: str = "") -> list[tuple[int, Path]]:
    """The epoch checkpoints in ``directory`` named as :func:`epoch_checkpoint_name` names them, oldest first.

    Only that exact pattern matches: another prefix's checkpoints (``stage2_...`` when looking for ``stage1_...`` or
    for no prefix) and the hidden temporary files of an interrupted atomic write are not listed.

    Args:
        directory: the checkpoint folder (absent: no checkpoints).
        prefix: the saver's ``file_prefix``.

    Returns:
        ``[(epoch, path), ...]`` sorted by epoch.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}.")
    directory = Path(directory)
    if not directory.is_dir():
        return []
    head = f"{re.escape(prefix)}_" if prefix else ""
    pattern = re.compile(rf"{head}checkpoint_epoch=(\d+)\.pt")
    found = []
    for path in directory.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_epoch_checkpoint(directory: str | os.PathLike, prefix: str = "") -> tuple[int, Path] | None:
    """The newest of :func:`epoch_checkpoints` (the highest epoch), or None when there is none."""
    found = epoch_checkpoints(directory, prefix)
    return found[-1] if found else None


def _read_checkpoint(
    path: str | os.PathLike, map_location: Any, expected: str, hint: str | None = None, mmap: bool = False
) -> tuple[str, Mapping]:
    """``(source, checkpoint)``: the file read with ``torch.load(weights_only=True)``, or a clear error.

    Raises:
        FileNotFoundError: ``path`` does not exist (``hint`` appended to the message).
        ValueError: the file is not a torch checkpoint.
        CheckpointKeyError: it does not hold a mapping (``expected`` says what it should hold).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist.{(' ' + hint) if hint else ''}")
    source = f"checkpoint {str(path)!r}"
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # unpickling errors have many types
        raise ValueError(f"{source} cannot be read as a torch checkpoint: {e}") from e
    if not isinstance(checkpoint, Mapping):
        raise CheckpointKeyError(f"{source} holds a {type(checkpoint).__name__}, not {expected}.")
    return source, checkpoint
