"""Run-time support for MONAI bundles that use monai-car: checked overrides, readable errors, writable outputs.

``python -m monai.bundle run <entry> --config_file ... --key value`` applies every ``--key value`` pair to the
config, known key or not: a misspelt key (``--stage2#num_sampels 2``) adds an unused setting and the run goes on
with the default. And an error raised inside a config expression ends the traceback with MONAI's generic
``RuntimeError: Failed to evaluate ConfigExpression: ...``, the project's own message 40-140 lines above it.

:func:`prepare_bundle_run`, the first expression of each entry point of the LIDC bundle, fixes both for that run:

- :func:`check_overrides`: every override key must exist in the config files (or be one of MONAI's special keys
  such as ``_disabled_`` on an existing component); an unknown one stops the run before anything is built, naming
  the closest valid keys (``difflib``). The overrides and config files are those given to
  ``monai.bundle.scripts.run`` (the command line, or the keyword arguments of an in-process ``monai.bundle.run``,
  and the ``args_file``), found on the call stack by :func:`find_run_arguments`. A workflow built some other way
  (``ConfigWorkflow`` directly, MONAI Label) is not checked: such tools set their keys themselves.
- :func:`install_error_hook`: in a ``python -m monai.bundle`` process, an uncaught error whose chain is wrapped by
  MONAI's generic ``RuntimeError`` gets one more line after the usual traceback: the innermost error that is not
  such a wrapper (the project's message), so that the last line is the one that says what went wrong.
- :func:`check_output_dirs`: every output folder can be created and written, else an error naming the folder and
  the option to change (instead of a raw ``[Errno 13] Permission denied`` from deep inside a writer).

:func:`bundle_trainer` is the alias behind MONAI's ``trainer`` / ``max_epochs`` bundle properties (see the
bundle's ``train`` section).
"""

from __future__ import annotations

import difflib
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .validation import check_positive_int

__all__ = [
    "BUNDLE_SPECIAL_KEYS",
    "OutputPathError",
    "UnknownOverrideError",
    "bundle_trainer",
    "check_output_dirs",
    "check_overrides",
    "config_ids",
    "find_run_arguments",
    "install_error_hook",
    "prepare_bundle_run",
    "root_cause",
]

BUNDLE_SPECIAL_KEYS = ("_target_", "_disabled_", "_requires_", "_desc_", "_mode_")
"""MONAI's reserved keys of a config component: an override may add one to an existing component."""

_RUN_ARGS = ("run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file")
_WRAPPER_PREFIXES = ("Failed to evaluate", "Failed to instantiate", "applying transform")
_SEPARATORS = ("::", "#")
_HOOK_MARK = "_monai_car_bundle_hook"


class UnknownOverrideError(ValueError):
    """An override names a key that none of the config files has (a misspelt key would be silently ignored)."""


class OutputPathError(OSError):
    """An output folder cannot be created or written; the message names the folder and the option to change."""


def _split(key: str) -> list[str]:
    for sep in _SEPARATORS[1:]:
        key = key.replace(sep, _SEPARATORS[0])
    return key.split(_SEPARATORS[0])


def config_ids(config: Any, prefix: str = "") -> list[str]:
    """Every ID of a (raw) config, nested ones included, joined with ``#`` as on the command line.

    Args:
        config: a config dict or list (e.g. ``ConfigParser.load_config_files(...)``).
        prefix: the ID of ``config`` itself (``""`` for the root).

    Returns:
        the IDs in depth-first order (a dict's keys, a list's indices ``"0"``, ``"1"``, ...).
    """
    if isinstance(config, Mapping):
        items = ((str(k), v) for k, v in config.items())
    elif isinstance(config, list):
        items = ((str(i), v) for i, v in enumerate(config))
    else:
        return []
    ids: list[str] = []
    for key, value in items:
        child = f"{prefix}#{key}" if prefix else key
        ids.append(child)
        ids.extend(config_ids(value, child))
    return ids


def _lookup(config: Any, parts: Sequence[str]) -> tuple[bool, Any]:
    node = config
    for part in parts:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _is_reference(value: Any) -> bool:
    """A plain ``"@id"`` reference: a key holding one is an alias, not a setting to suggest."""
    return isinstance(value, str) and value.startswith("@")


def _names(config_files: str | os.PathLike | Sequence[str | os.PathLike]) -> str:
    files = [config_files] if isinstance(config_files, (str, os.PathLike)) else list(config_files)
    return ", ".join(Path(f).name for f in files)


def check_overrides(
    overrides: Mapping[str, Any],
    config_files: str | os.PathLike | Sequence[str | os.PathLike],
    extra_keys: Sequence[str] = (),
) -> None:
    """Refuse override keys that the config files do not have, naming the closest valid ones.

    A key is valid when it exists in the merged config files (``#`` or ``::`` separated, list indices included),
    when it is in ``extra_keys`` (e.g. the settings of MONAI's experiment tracking), when it is under ``_meta_``
    (the metadata file's content), or when it adds one of :data:`BUNDLE_SPECIAL_KEYS` to an existing dict (e.g.
    ``stage1#handlers#1#_disabled_``).

    Args:
        overrides: the ``key: value`` pairs of the run (``--key value`` on the command line).
        config_files: the config file(s) of the run, merged in order as ``monai.bundle`` merges them.
        extra_keys: further valid top-level keys.

    Raises:
        TypeError: ``overrides`` is not a mapping.
        UnknownOverrideError: an override key is not in the config files; the message lists each unknown key with
            up to three close valid keys.
    """
    if not isinstance(overrides, Mapping):
        raise TypeError(f"overrides must be a mapping of config keys to values, got {type(overrides).__name__}.")
    if not overrides:
        return
    from monai.bundle import ConfigParser

    config = ConfigParser.load_config_files(config_files)
    extra = set(extra_keys)
    unknown = []
    for key in overrides:
        parts = _split(str(key))
        if parts[0] in extra or parts[0] == "_meta_":
            continue
        found, _ = _lookup(config, parts)
        if found:
            continue
        parent_found, parent = _lookup(config, parts[:-1])
        if parent_found and isinstance(parent, Mapping) and parts[-1] in BUNDLE_SPECIAL_KEYS:
            continue
        unknown.append("#".join(parts))
    if not unknown:
        return
    candidates = [c for c in config_ids(config) if not _is_reference(_lookup(config, _split(c))[1])]
    lines = []
    for key in unknown:
        close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join('--' + c for c in close)}?" if close else "no similar key"
        lines.append(f"  --{key}: {hint}")
    raise UnknownOverrideError(
        f"{len(unknown)} override key(s) not found in {_names(config_files)}; a misspelt key would be ignored and "
        "the run would use the default, so it stops here:\n" + "\n".join(lines)
    )


def _tracking_keys(tracking: Any) -> list[str]:
    if tracking is None:
        return []
    from monai.bundle import ConfigParser
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

    if isinstance(tracking, str) and tracking in DEFAULT_EXP_MGMT_SETTINGS:
        settings = DEFAULT_EXP_MGMT_SETTINGS[tracking]
    elif isinstance(tracking, Mapping):
        settings = tracking
    else:
        settings = ConfigParser.load_config_files(tracking)
    return [str(k) for k in settings.get("configs", {})]


def find_run_arguments() -> dict[str, Any] | None:
    """The config files, overrides and tracking setting of the running ``monai.bundle.scripts.run`` call.

    ``python -m monai.bundle run ...`` and an in-process ``monai.bundle.run(...)`` both go through that function;
    its frame is found on the call stack. Overrides from its ``args_file`` are included (the call's own keyword
    arguments take precedence, as in MONAI).

    Returns:
        ``{"config_file": ..., "overrides": {...}, "tracking": ...}``, or ``None`` when no such call is running
        (a workflow built directly, e.g. by MONAI Label).
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "run" and frame.f_globals.get("__name__") == "monai.bundle.scripts":
            break
        frame = frame.f_back
    if frame is None:
        return None
    local = frame.f_locals
    overrides = dict(local.get("override") or {})
    config_file, tracking, args_file = local.get("config_file"), local.get("tracking"), local.get("args_file")
    del frame, local
    if args_file is not None:
        from monai.bundle import ConfigParser

        from_file = dict(ConfigParser.load_config_file(args_file))
        config_file = config_file if config_file is not None else from_file.get("config_file")
        tracking = tracking if tracking is not None else from_file.get("tracking")
        overrides = {**{k: v for k, v in from_file.items() if k not in _RUN_ARGS}, **overrides}
    if config_file is None:
        return None
    return {"config_file": config_file, "overrides": overrides, "tracking": tracking}


def root_cause(error: BaseException) -> BaseException:
    """The first error in ``error``'s chain that is not one of MONAI's generic wrappers.

    MONAI re-raises an error from a config expression, a component's instantiation or a transform as a
    ``RuntimeError("Failed to evaluate ...")`` / ``("Failed to instantiate ...")`` / ``("applying transform
    ...")`` chained to it; this follows ``__cause__`` through those wrappers to the error that says what is wrong.
    """
    seen = set()
    while (
        type(error) is RuntimeError
        and error.__cause__ is not None
        and str(error).startswith(_WRAPPER_PREFIXES)
        and id(error) not in seen
    ):
        seen.add(id(error))
        error = error.__cause__
    return error


def _is_bundle_cli() -> bool:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) in ("monai.bundle.__main__", "monai.bundle")


def install_error_hook(force: bool = False) -> bool:
    """Make the last line of an uncaught bundle error the project's message (``python -m monai.bundle`` only).

    The hook prints the usual traceback (through the previous ``sys.excepthook``), then, when the error is one of
    MONAI's generic wrappers (see :func:`root_cause`), a blank line and ``<ErrorType>: <message>`` of the error
    that caused it. Installed once per process; other errors are printed as before.

    Args:
        force: install even when the process is not ``python -m monai.bundle`` (tests).

    Returns:
        whether the hook is installed now.
    """
    if getattr(sys.excepthook, _HOOK_MARK, False):
        return True
    if not (force or _is_bundle_cli()):
        return False
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        previous(exc_type, exc, tb)
        cause = root_cause(exc)
        if cause is not exc:
            sys.stderr.write(f"\n{type(cause).__name__}: {cause}\n")
            sys.stderr.flush()

    setattr(hook, _HOOK_MARK, True)
    sys.excepthook = hook
    return True


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def check_output_dirs(output_dirs: Mapping[str, str | os.PathLike | None]) -> None:
    """Check that each output folder can be created and written, without creating it.

    Args:
        output_dirs: ``{option name: folder}``, e.g. ``{"output_dir": "runs/lidc_car"}``; ``None`` folders are
            skipped. The option name is used in the message (``--output_dir``).

    Raises:
        TypeError: ``output_dirs`` is not a mapping, or a folder is not a path.
        OutputPathError: a folder is an existing file, lies under a file, or its nearest existing folder cannot be
            written; the message names the folder, the reason and the option to change.
    """
    if not isinstance(output_dirs, Mapping):
        raise TypeError(f"output_dirs must map option names to folders, got {type(output_dirs).__name__}.")
    for option, folder in output_dirs.items():
        if folder is None:
            continue
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"{option} must be a folder path, got {type(folder).__name__}: {folder!r}.")
        path = Path(folder).absolute()
        ancestor = _existing_ancestor(path)
        advice = f"give a writable folder with --{option} <folder>"
        if not ancestor.is_dir():
            where = "is a file" if ancestor == path else f"cannot be created: {ancestor} is a file"
            raise OutputPathError(f"--{option} {folder} {where}; {advice}.")
        try:
            with tempfile.TemporaryFile(dir=ancestor):
                pass
        except OSError as e:
            what = "cannot be written" if ancestor == path else f"cannot be created in {ancestor}"
            raise OutputPathError(
                e.errno, f"--{option} {folder} {what} ({e.strerror}); {advice}, or make {ancestor} writable."
            ) from e


def prepare_bundle_run(output_dirs: Mapping[str, str | os.PathLike | None] | None = None) -> None:
    """The first step of a bundle entry point: error hook, override check, output folders.

    Installs :func:`install_error_hook` (``python -m monai.bundle`` processes), checks the running
    ``monai.bundle run``'s overrides against its config files (:func:`check_overrides`, skipped when the workflow
    was not started by ``monai.bundle run``) and then the output folders (:func:`check_output_dirs`).

    Args:
        output_dirs: ``{option name: folder}`` the entry point writes to.

    Raises:
        UnknownOverrideError: an override key is not in the config files.
        OutputPathError: an output folder cannot be created or written.
    """
    install_error_hook()
    run_args = find_run_arguments()
    if run_args is not None:
        check_overrides(run_args["overrides"], run_args["config_file"], _tracking_keys(run_args["tracking"]))
    if output_dirs is not None:
        check_output_dirs(output_dirs)


def bundle_trainer(trainer: Any, max_epochs: int) -> Any:
    """``trainer`` with ``max_epochs`` epochs: the alias behind MONAI's ``trainer`` / ``max_epochs`` properties.

    MONAI's bundle properties look for ``train#trainer`` and ``train#trainer#max_epochs``; a two-stage bundle keeps
    its trainers under ``stage1`` / ``stage2``. ``train#trainer`` is this function applied to the stage-2 trainer
    with ``max_epochs: "@stage2#max_epochs"``, so reading the properties gives the stage-2 trainer and its epochs,
    and setting ``max_epochs`` through them changes the epochs of the trainer returned here.

    Args:
        trainer: an ignite engine (MONAI ``Trainer``) whose ``state.max_epochs`` is set.
        max_epochs: the epochs to run, a positive int.

    Raises:
        TypeError: ``trainer`` has no ignite ``state``.
        ValueError: ``max_epochs`` is not a positive int.
    """
    max_epochs = check_positive_int(max_epochs, "max_epochs")
    state = getattr(trainer, "state", None)
    if state is None or not hasattr(state, "max_epochs"):
        raise TypeError(f"trainer must be an ignite engine with a state, got {type(trainer).__name__}.")
    state.max_epochs = max_epochs
    return trainer
