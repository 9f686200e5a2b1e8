"""The training settings a checkpoint must be used with, stored in the checkpoint and checked when it loads.

A network's weights load into any network with the same parameter shapes, but some settings change the results
without changing a shape (the crop size, the HU window and in-plane spacing of the input) and others only show as a
list of mismatched parameter names (the network widths). :class:`TrainingGeometry` records them: it is a checkpoint
entry (``"geometry"``, saved through ``state_dict()`` like a network), and when a checkpoint loads,
:func:`~monai_car.utils.load_network_weights` / :func:`~monai_car.utils.load_checkpoint` compare it with the
geometry of the run that loads it and refuse a mismatch, naming both values and the option to change. A checkpoint
written before the geometry was stored loads with a warning.

:class:`StageSettings` is the same kind of entry (``"settings"``) for the settings of a training stage that change its
result without being part of the model (seed, learning rates, loss weights, the data set): a stage is only continued
from, or skipped for, a checkpoint trained with the same ones (see :class:`monai_car.engines.StageResume`).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "GEOMETRY_KEY",
    "SETTINGS_KEY",
    "CheckpointGeometryError",
    "CheckpointSettingsError",
    "StageSettings",
    "TrainingGeometry",
    "as_training_geometry",
]

GEOMETRY_KEY = "geometry"
"""The checkpoint entry holding the training geometry (a dict of plain values)."""

SETTINGS_KEY = "settings"
"""The checkpoint entry holding a training stage's settings (:class:`StageSettings`, a dict of plain values)."""


class CheckpointGeometryError(ValueError):
    """A checkpoint was trained with other settings than the run loading it has; the message names them."""


class CheckpointSettingsError(CheckpointGeometryError):
    """A stage's checkpoint was trained with other stage settings (:class:`StageSettings`) than this run has."""


def _plain(value: Any, name: str) -> Any:
    """``value`` as plain JSON-like Python (tuples become lists, numpy scalars numbers), or a ``TypeError``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{name}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (Sequence, np.ndarray)):
        return [_plain(v, f"{name}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"training geometry {name!r} must be a number, string, bool, None or a list of them, got "
        f"{type(value).__name__}."
    )


def _same(a: Any, b: Any) -> bool:
    """Equal as settings: numbers within float rounding (``-1000`` equals ``-1000.0``), lists element-wise."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _cli(value: Any) -> str:
    """``value`` as ``python -m monai.bundle run`` reads it on the command line (lists as quoted JSON)."""
    if isinstance(value, (list, dict)):
        return f'"{json.dumps(value)}"'
    if value is None or isinstance(value, bool):
        return repr(value)
    return str(value)


class TrainingGeometry:
    """The settings a model was trained with that evaluation and inference must repeat.

    A checkpoint entry: ``state_dict()`` gives the settings as a plain dict (saved with the weights), and
    :meth:`check` (``load_state_dict``) compares a saved geometry with this one. The bundle records the network
    settings (``spatial_dims``, ``crop_size``, ``num_classes``, ``noise_dim``, the widths) and the preprocessing of the
    training data (``hu_window``, ``in_plane_spacing``) under their config names, so a mismatch message can name the
    option to change.

    Args:
        settings: name -> value (numbers, strings, bools, None, lists of them); names are the config options.
        sources: name -> how this run sets the value, for messages (default: ``"set --<name> <trained value>"``), e.g.
            ``"hu_window of /data/x/datalist.json: use a data set windowed like the training's"``.
        kwargs: more settings.

    Raises:
        TypeError: a setting that is not a plain value.
        ValueError: no settings.
    """

    _kind = "training geometry"
    _error: type[CheckpointGeometryError] = CheckpointGeometryError

    def __init__(
        self, settings: Mapping[str, Any] | None = None, sources: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        merged = {**dict(settings or {}), **kwargs}
        if not merged:
            raise ValueError("a TrainingGeometry needs at least one setting (e.g. crop_size=48).")
        self._settings = {str(k): _plain(v, str(k)) for k, v in merged.items()}
        self._sources = {str(k): str(v) for k, v in (sources or {}).items() if str(k) in self._settings}

    @property
    def settings(self) -> dict[str, Any]:
        """A copy of the settings."""
        return json.loads(json.dumps(self._settings))

    def source(self, name: str) -> str | None:
        """How this run sets ``name`` (for messages), or None for a plain option."""
        return self._sources.get(name)

    def without(self, *names: str) -> TrainingGeometry:
        """The geometry minus ``names`` (e.g. stage 1's: F's settings, without G's ``noise_dim`` and widths)."""
        kept = {k: v for k, v in self._settings.items() if k not in names}
        return type(self)(kept, self._sources)

    def state_dict(self) -> dict[str, Any]:
        """The settings, as saved in a checkpoint."""
        return self.settings

    def load_state_dict(self, state_dict: Mapping[str, Any] | None) -> None:
        """Check a saved geometry against this one (nothing is loaded); see :meth:`check`."""
        self.check(state_dict)

    def check(self, saved: Mapping[str, Any] | None, source: str = "the checkpoint") -> None:
        """Refuse a checkpoint trained with other settings than these.

        Args:
            saved: the checkpoint's geometry; None for a checkpoint written before geometries were stored.
            source: names the checkpoint in messages.

        Raises:
            CheckpointGeometryError: a setting differs; the message names each with both values and what to change.

        Warns:
            UserWarning: when ``saved`` is None (nothing can be checked), or lacks some of these settings (e.g. the
            training data set's datalist does not state its ``in_plane_spacing``); those are not checked.
        """
        names = sorted(self._settings)
        if saved is None:
            warnings.warn(
                f"{source} records no {self._kind} (an older monai-car wrote it), so {names} cannot be "
                "checked against it; make sure they are the settings it was trained with.",
                stacklevel=3,
            )
            return
        if not isinstance(saved, Mapping):
            raise self._error(f"{source}: its {self._kind} entry is a {type(saved).__name__}, not a dict of settings.")
        problems, fixes = [], []
        for name in names:
            if name not in saved:
                continue
            trained, here = _plain(saved[name], name), self._settings[name]
            if _same(trained, here):
                continue
            source_here = self._sources.get(name)
            how = source_here if source_here else f"set --{name} {_cli(trained)}"
            problems.append(f"{name}: trained with {json.dumps(trained)}, this run has {json.dumps(here)} ({how})")
            if not source_here:
                fixes.append(f"--{name} {_cli(trained)}")
        if problems:
            fix = f"Run with the training's settings ({' '.join(fixes)})" if fixes else "Use the training's settings"
            raise self._error(
                f"{source} was trained with other settings than this run: {'; '.join(problems)}. {fix}, or use a "
                "checkpoint trained with these settings."
            )
        unrecorded = [name for name in names if name not in saved]
        if unrecorded:
            warnings.warn(
                f"{source} does not record {unrecorded} (the training run did not know them, e.g. its data set's "
                "datalist.json does not state them), so they are not checked; make sure they match the training data.",
                stacklevel=3,
            )

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and _same(self._settings, other._settings)

    def __hash__(self) -> int:
        return hash(json.dumps(self._settings, sort_keys=True))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._settings})"


class StageSettings(TrainingGeometry):
    """The settings of one training stage that its result depends on, beyond the model's geometry.

    A checkpoint entry (:data:`SETTINGS_KEY`) like :class:`TrainingGeometry`, with the same checks: a stage's
    checkpoints record them, and a run continues a stage from such a checkpoint, or skips a stage whose final
    checkpoint is complete, only when its own settings are the same (a mismatch is a :class:`CheckpointSettingsError`
    naming each setting with both values and the option to set). Names are the config options, ``#`` included
    (``"stage2#lr_d"``), so the message says ``set --stage2#lr_d 0.0002``. Leave out what may change between a run
    and its continuation (the number of epochs: a stage may be trained further).

    Args:
        settings: name -> value (numbers, strings, bools, None, lists of them), e.g. ``{"seed": 0, "stage2#lr_d":
            2e-4}``.
        sources: name -> how this run sets the value, for messages (default ``"set --<name> <trained value>"``).
        sections: ``{section: {name: value}}``, more settings named ``<section>#<name>`` (a MONAI config cannot hold
            a ``#`` in a key: ``{"stage2": {"lr_d": "@stage2#lr_d"}}`` is the setting ``stage2#lr_d``).
        kwargs: more settings.

    Raises:
        TypeError: a setting that is not a plain value, or ``sections`` not a mapping of mappings.
        ValueError: no settings, or a name given twice.
    """

    _kind = "stage settings"
    _error = CheckpointSettingsError

    def __init__(
        self,
        settings: Mapping[str, Any] | None = None,
        sources: Mapping[str, str] | None = None,
        sections: Mapping[str, Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        merged = {**dict(settings or {}), **kwargs}
        if sections is not None and not isinstance(sections, Mapping):
            raise TypeError(f"sections must map section names to settings, got {type(sections).__name__}.")
        for section, values in (sections or {}).items():
            if not isinstance(values, Mapping):
                raise TypeError(f"sections[{section!r}] must map names to values, got {type(values).__name__}.")
            for name, value in values.items():
                key = f"{section}#{name}"
                if key in merged:
                    raise ValueError(f"stage setting {key!r} is given twice.")
                merged[key] = value
        super().__init__(merged, sources)


def as_training_geometry(geometry: TrainingGeometry | Mapping[str, Any]) -> TrainingGeometry:
    """``geometry`` as a :class:`TrainingGeometry` (a mapping of settings is wrapped)."""
    if isinstance(geometry, TrainingGeometry):
        return geometry
    if isinstance(geometry, Mapping):
        return TrainingGeometry(geometry)
    raise TypeError(f"geometry must be a TrainingGeometry or a mapping of settings, got {type(geometry).__name__}.")
