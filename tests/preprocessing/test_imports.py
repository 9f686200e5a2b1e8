"""Import direction (issue 13): ``preprocessing`` uses ``monai_car``, never the reverse, and has no import cycle.

Every import statement counts, including those inside functions, so a cycle cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The absolute names of the modules ``path`` imports (relative imports resolved, ``from pkg import sub`` kept as
    both ``pkg`` and ``pkg.sub``)."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _package_modules(name: str) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((REPO_ROOT / name).rglob("*.py"))}


def test_monai_car_never_imports_preprocessing():
    offenders = {
        module: sorted(i for i in _imports(path) if i == "preprocessing" or i.startswith("preprocessing."))
        for module, path in _package_modules("monai_car").items()
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_preprocessing_has_no_import_cycle():
    modules = _package_modules("preprocessing")
    graph = {m: sorted(i for i in _imports(p) if i in modules and i != m) for m, p in modules.items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in graph[module]:
            assert state.get(dep) != 1, f"import cycle: {' -> '.join([*path, module, dep])}"
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])
    assert "preprocessing.importers" not in graph["preprocessing.importers_arrays"]
    assert "preprocessing.importers" not in graph["preprocessing.importers_images"]


def test_each_module_imports_fresh_and_preprocessing_stays_light():
    """Each ``preprocessing`` module imports on its own (nothing left half-initialised by an import order), and
    ``import preprocessing`` / the command line do not load torch or MONAI."""
    modules = sorted(_package_modules("preprocessing"))
    script = f"""
import importlib, sys
for name in {modules!r}:
    for loaded in [m for m in sys.modules if m == "preprocessing" or m.startswith("preprocessing.")]:
        del sys.modules[loaded]
    importlib.import_module(name)
heavy = sorted(m for m in ("torch", "monai") if m in sys.modules)
assert not heavy, heavy
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
