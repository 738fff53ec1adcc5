"""The shape of the code: no class so long that a newcomer gets lost in it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_activations"
MAX_CLASS_LINES = 250


def _long_classes(source: str, limit: int = MAX_CLASS_LINES) -> list[tuple[str, int, int]]:
    """``(name, first line, lines)`` of every class (nested ones too) longer than ``limit``.

    A class's lines run from its first decorator to its last statement.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            lines = node.end_lineno - first + 1
            if lines > limit:
                found.append((node.name, first, lines))
    return found


def test_the_measure_counts_a_class_from_decorator_to_last_line():
    def source(n_body: int) -> str:
        return "@decorator\nclass Long:\n" + "    x = 1\n" * n_body + "\nclass Short:\n    pass\n"

    assert _long_classes(source(248)) == []  # 1 + 1 + 248 = 250 lines
    assert _long_classes(source(249)) == [("Long", 1, 251)]


def test_no_class_is_longer_than_250_lines():
    modules = sorted(SRC.rglob("*.py"))
    assert len(modules) > 5, f"no modules found under {SRC}"
    offenders = [
        f"{path.relative_to(SRC)}:{line} {name} ({lines} lines)"
        for path in modules
        for name, line, lines in _long_classes(path.read_text(encoding="utf-8"))
    ]
    print("\n".join(offenders))
    assert not offenders, f"classes longer than {MAX_CLASS_LINES} lines; split them:\n" + "\n".join(
        offenders
    )
