"""Atomic output files and folders with the permissions of normally created ones.

An output is written under a temporary name beside its target and renamed onto it (``os.replace``) only once it is
complete, so a crash, an exception or a full disk never leaves a truncated file (or a half-filled folder) under the
final name, and an existing target is replaced only by a complete new one.

- :func:`atomic_file`: a context manager yielding a temporary file path, renamed onto the target on success.
- :func:`atomic_dir`: the same for a folder (a staging folder that replaces the target folder as a whole).
- :func:`write_bytes_atomic`, :func:`write_text_atomic`, :func:`write_json_atomic`: one-call writers on top.
- :func:`make_staging_dir` and :func:`replace_dir`: the two halves of :func:`atomic_dir`, for callers with their own
  publishing rules (e.g. a build that another process may finish first).

Permissions: ``tempfile.mkstemp`` / ``tempfile.mkdtemp`` create their file / folder with mode 0600 / 0700 (owner
only), which the rename carries over to the output: on a shared machine other users and groups could not read it,
unlike a file made by ``open()``. Here the temporary file is created with ``os.open(..., O_CREAT | O_EXCL,
0o666)`` and the folder with ``os.mkdir(..., 0o777)``: the kernel applies the process umask (or the parent folder's
default ACL, if it has one) exactly as for ``open()`` / ``os.mkdir``, i.e. ``0o666 & ~umask`` / ``0o777 & ~umask``
(0644 / 0755 under the usual umask 0022). The umask is never read: ``os.umask`` can only be read by setting it, and
a thread creating a file between the two calls would get the temporary value.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from .validation import check_positive_int

__all__ = [
    "atomic_dir",
    "atomic_file",
    "file_digest",
    "make_staging_dir",
    "remove_stale_staging",
    "replace_dir",
    "write_bytes_atomic",
    "write_csv_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

_FILE_MODE = 0o666  # what open() asks for; the kernel applies the umask
_DIR_MODE = 0o777  # what os.mkdir asks for
_ATTEMPTS = 100  # random names tried before giving up (tempfile's TMP_MAX is 10000; a clash is already unlikely)
_NAME_MAX = 255  # bytes in one file name on common file systems


def _target(path: object, what: str = "path") -> Path:
    """``path`` as a ``Path`` naming a file or folder (not ``/``, ``.`` or ``..``), or a clear error."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a str or os.PathLike, got {type(path).__name__}.")
    if "\0" in os.fspath(path):
        raise ValueError(f"{what} must not contain a NUL character, got {path!r}.")
    p = Path(path)
    if p.name in ("", ".", ".."):
        raise ValueError(f"{what} must name a file or folder, got {os.fspath(path)!r}.")
    return p


def _check_suffix(suffix: object) -> str:
    if not isinstance(suffix, str):
        raise TypeError(f"suffix must be a str, got {type(suffix).__name__}.")
    if "/" in suffix or os.sep in suffix or "\0" in suffix or len(os.fsencode(suffix)) > 64:
        raise ValueError(
            f"suffix must be a short file name ending (e.g. '.nii.gz') without separators, got {suffix!r}."
        )
    return suffix


def _hidden_sibling(path: Path, tag: str, suffix: str = "") -> Path:
    """A fresh random name ``.<name>.<tag>-<random><suffix>`` in ``path``'s folder, shortening ``<name>`` if the
    result would exceed the file system's name limit."""
    token = secrets.token_hex(4)
    base = path.name
    while base and len(os.fsencode(f".{base}.{tag}-{token}{suffix}")) > _NAME_MAX:
        base = base[:-1]
    return path.parent / f".{base}.{tag}-{token}{suffix}"


def _create_temp_file(path: Path, suffix: str) -> Path:
    for _ in range(_ATTEMPTS):
        tmp = _hidden_sibling(path, "tmp", suffix)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), _FILE_MODE)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {path} ({_ATTEMPTS} names taken).")


def _remove(path: Path) -> None:
    """Remove a file, folder tree or link if present; never raises (used while another error propagates)."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass


@contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Write a file atomically: yield a temporary path beside ``path``, renamed onto ``path`` on success.

    The temporary file (``.<name>.tmp-<random><suffix>`` in ``path``'s folder, so the rename never crosses file
    systems) already exists, empty, when yielded; write it by name (``open(tmp, "wb")``, ``nib.save(img, tmp)``,
    ``fig.savefig(tmp)``, ...) and close it before the block ends. It is created like ``open()`` creates files, so
    ``path`` ends up with mode ``0o666 & ~umask`` (see the module docstring). If the block raises (any
    ``BaseException``, ``KeyboardInterrupt`` included) or the rename fails, the temporary file is removed, an existing
    ``path`` is left untouched, and the error propagates.

    Example::

        with atomic_file(out / "mask.nii.gz", suffix=".nii.gz") as tmp:
            nib.save(image, tmp)

    Args:
        path: the final file; its folder is created (``0o777 & ~umask``) if missing.
        suffix: ending of the temporary name, for writers that pick the format from it (nibabel needs
            ``".nii.gz"`` to compress, matplotlib's ``savefig`` a known image extension).

    Yields:
        the temporary file's path.

    Raises:
        TypeError: ``path`` is not a str / ``os.PathLike`` or ``suffix`` not a str.
        ValueError: ``path`` names no file (empty, ``/``, ``..``) or ``suffix`` holds a path separator.
        IsADirectoryError: ``path`` is an existing folder.
    """
    path = _target(path)
    suffix = _check_suffix(suffix)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; atomic_file writes files.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_file(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def make_staging_dir(path: str | os.PathLike) -> Path:
    """Create an empty hidden folder ``.<name>.tmp-<random>`` beside ``path`` (parent folders created), with the
    permissions of ``os.mkdir`` (``0o777 & ~umask``), unlike ``tempfile.mkdtemp``'s 0700.

    Fill it, then move it onto ``path`` with :func:`replace_dir` (or ``os.replace``); on failure remove it
    (``shutil.rmtree``). :func:`atomic_dir` does all of this.

    Returns:
        the new folder.
    """
    path = _target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(_ATTEMPTS):
        stage = _hidden_sibling(path, "tmp")
        try:
            os.mkdir(stage, _DIR_MODE)
        except FileExistsError:
            continue
        return stage
    raise FileExistsError(f"could not create a staging folder beside {path} ({_ATTEMPTS} names taken).")


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Move the folder ``src`` onto ``dst`` (same file system), replacing an existing ``dst`` folder as a whole.

    An existing ``dst`` is first renamed aside (``.<name>.old-<random>``), then ``src`` renamed into place, then the
    old folder deleted; if the second rename fails the old folder is put back. A reader thus sees the old folder,
    briefly no folder, or the new one, never a mixture.

    Returns:
        ``dst`` as a ``Path``.

    Raises:
        NotADirectoryError: ``src`` is not a folder.
        FileExistsError: ``dst`` exists and is not a folder.
    """
    src, dst = _target(src, "src"), _target(dst, "dst")
    if not src.is_dir():
        raise NotADirectoryError(f"{src} is not a folder.")
    if not (dst.exists() or dst.is_symlink()):
        os.replace(src, dst)
        return dst
    if not dst.is_dir():
        raise FileExistsError(f"{dst} exists and is not a folder; move it away first.")
    old = _hidden_sibling(dst, "old")
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    _remove(old)
    return dst


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Write a folder atomically: yield an empty staging folder beside ``path`` that replaces ``path`` on success.

    The staging folder is made by :func:`make_staging_dir` (mode ``0o777 & ~umask``); files and folders created in
    it with ``open()``, ``os.mkdir``, :func:`atomic_file`, nibabel, ... get their usual permissions, so the published
    tree is readable like any other (a file made with ``tempfile.mkstemp`` inside would still be 0600). On success the
    folder is moved onto ``path`` by :func:`replace_dir`; if the block raises (any ``BaseException``) or the move
    fails, the staging folder is deleted, an existing ``path`` is left untouched, and the error propagates.

    Example::

        with atomic_dir(out / case_id) as stage:
            (stage / "samples.nii.gz").write_bytes(data)

    Args:
        path: the final folder; its parent is created if missing.

    Yields:
        the staging folder.

    Raises:
        FileExistsError: ``path`` exists and is not a folder (raised before the block runs).
    """
    path = _target(path)
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder; move it away first.")
    stage = make_staging_dir(path)
    try:
        yield stage
        replace_dir(stage, path)
    except BaseException:
        _remove(stage)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`; the folder is created).

    Returns:
        ``path`` as a ``Path``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes-like, got {type(data).__name__}.")
    path = _target(path)
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_file`; the folder is created).

    Args:
        path: the final file.
        text: its content (written as is; ``"\\n"`` is not translated).
        encoding: the text encoding.

    Returns:
        ``path`` as a ``Path``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__} (the arguments are (path, text)).")
    path = _target(path)
    data = text.encode(encoding)
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_json_atomic(
    path: str | os.PathLike, obj: object, *, indent: int | None = 2, sort_keys: bool = False, allow_nan: bool = False
) -> Path:
    """Write ``obj`` as JSON plus a final newline to ``path`` atomically (see :func:`atomic_file`).

    The text is produced before anything is created, so an object that cannot be serialised leaves no file.

    Args:
        path: the final file (its folder is created).
        obj: a JSON-serialisable object.
        indent: ``json.dumps``' indent.
        sort_keys: sort the keys of dictionaries.
        allow_nan: write NaN / Infinity (not valid JSON); by default they raise ``ValueError``.

    Returns:
        ``path`` as a ``Path``.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=allow_nan) + "\n"
    return write_text_atomic(path, text)


def write_csv_atomic(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], fieldnames: Sequence[str]) -> Path:
    """Write ``rows`` as CSV with the header ``fieldnames`` to ``path`` atomically (see :func:`atomic_file`).

    Raises:
        ValueError: (from ``csv.DictWriter``) when a row holds a key that is not a field; nothing is left behind.
    """
    with atomic_file(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def remove_stale_staging(path: str | os.PathLike) -> list[Path]:
    """Remove what killed writers of ``path`` left beside it: the hidden staging and set-aside folders/files
    ``.<name>.tmp-*`` and ``.<name>.old-*`` that :func:`atomic_dir`, :func:`atomic_file` and :func:`replace_dir`
    create (a crash or ``kill -9`` between their creation and their rename leaves them behind).

    Call it before a new run into ``path``; two runs writing the same ``path`` at once are not supported.

    Returns:
        the removed paths.
    """
    path = _target(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for tag in ("tmp", "old"):
        for stale in sorted(path.parent.glob(f".{glob_escape(path.name)}.{tag}-*")):
            _remove(stale)
            removed.append(stale)
    return removed


def file_digest(path: str | os.PathLike, length: int = 16) -> str:
    """The first ``length`` hex digits of a file's SHA-256 (e.g. a data set's ``datalist.json``, as a stage setting).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist.")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[: check_positive_int(length, "length")]
