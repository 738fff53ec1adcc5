"""The runtime dependencies in pyproject.toml are exactly the packages that src/ imports."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "napari_activations"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level_modules() -> set[str]:
    """Top-level names of every absolute import in src/ (lazy imports in functions too)."""
    names = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"napari_activations", "__future__"}


# Optional extras whose packages src/ imports (inside the functions that need them).
OPTIONAL_EXTRAS = ("bioimageio",)


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    deps = project["dependencies"] + [d for e in OPTIONAL_EXTRAS for d in extras[e]]
    return {_normalise(re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0]) for d in deps}


def test_runtime_dependencies_are_the_imports():
    dists = packages_distributions()
    imported = set()
    for module in _imported_top_level_modules():
        assert module in dists, f"src/ imports {module!r}, which no installed package provides"
        imported.update(_normalise(d) for d in dists[module])
    declared = _declared()
    assert imported - declared == set(), "imported by src/ but not declared in pyproject.toml"
    assert declared - imported == set(), "declared but never imported by src/"


def test_the_import_scan_sees_lazy_imports():
    # torch is imported only inside functions (the package imports lazily): still a dependency.
    assert {"torch", "dask", "onnxruntime", "imageio", "qtpy", "skimage", "vispy"} <= (
        _imported_top_level_modules()
    )
