"""The LIDC command line: the console command ``monai-car-lidc`` and ``python -m preprocessing.lidc``."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from preprocessing.lidc import console, main

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: tomllib is in the standard library from 3.11
    tomllib = None

REPO_ROOT = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ("build", "import", "stats")


def _pyproject() -> dict:
    if tomllib is None:
        pytest.skip("reading pyproject.toml needs tomllib (Python 3.11+)")
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _declared_target() -> str:
    scripts = _pyproject()["project"]["scripts"]
    assert "monai-car-lidc" in scripts, "pyproject.toml [project.scripts] must declare monai-car-lidc"
    return scripts["monai-car-lidc"]


def _resolve(target: str):
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def test_console_command_is_declared_and_resolves_to_the_cli():
    target = _declared_target()
    func = _resolve(target)
    assert callable(func) and func is console
    packages = _pyproject()["tool"]["setuptools"]["packages"]["find"]
    assert any(p.startswith("preprocessing") for p in packages["include"]), "preprocessing must be in the wheel"


def test_console_command_help_lists_the_subcommands(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["monai-car-lidc", "--help"])
    with pytest.raises(SystemExit) as exc:
        console()
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: monai-car-lidc ")
    assert all(cmd in out for cmd in SUBCOMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_console_command_subcommand_help(command, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["monai-car-lidc", command, "--help"])
    with pytest.raises(SystemExit) as exc:
        console()
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: monai-car-lidc {command} ")


def test_console_command_bad_arguments_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["monai-car-lidc", "build"])
    with pytest.raises(SystemExit) as exc:
        console()
    assert exc.value.code == 2
    assert "monai-car-lidc build: error" in capsys.readouterr().err


def test_installed_entry_point_matches_pyproject():
    """When the package is installed, its metadata must carry the same entry point (reinstall after editing)."""
    try:
        importlib.metadata.distribution("monai-car")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("monai-car is not installed (pip install -e .)")
    installed = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert installed.get("monai-car-lidc") == _declared_target(), "reinstall: pip install -e . --no-deps"


def test_python_m_preprocessing_lidc_still_works():
    proc = subprocess.run(
        [sys.executable, "-m", "preprocessing.lidc", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m preprocessing.lidc ")
    assert all(cmd in proc.stdout for cmd in SUBCOMMANDS)


def test_main_keeps_its_program_name(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m preprocessing.lidc ")
