"""The docs' code, run: the numbers quoted in docs/analysis.md and the tutorial's npe2 command.

Each ``python`` block of docs/analysis.md runs in order in one namespace, with the built-in
(Caffe) weights. A statement followed by a comment that is a Python literal (``# [13, 32]``,
``# (8, 8)``, ``# [('neck brace', 0.82), ...]``) or a table (``# channel first ...``) must
give that value, to the digits the docs print. The numbers quoted in the prose are checked
at the end. So the docs cannot drift from what the code computes.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import numpy as np
import pytest

import napari_activations as na

DOCS = Path(__file__).resolve().parents[1] / "docs"
# Names the docs leave for the reader to fill in (a viewer, a pixel, a stack of one's own).
READERS_NAMES = {"viewer", "y", "x", "stack", "z"}


def code_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


class Number:
    """A number as the docs print it: equal to a value that rounds to it."""

    def __init__(self, text: str):
        self.value = float(text)
        decimals = len(text.split(".")[1]) if "." in text else 0
        self.tolerance = 0.5 * 10.0**-decimals * (1 + 1e-9)

    def matches(self, actual: float) -> bool:
        return abs(float(actual) - self.value) <= self.tolerance


def parse_literal(comment: str):
    """The literal a comment starts with, numbers as :class:`Number`; None if it has none."""
    match = re.match(r"[\[(]", comment)
    if not match:
        return None
    depth = 0
    for end, char in enumerate(comment):  # noqa: B007 (end is used after the loop)
        depth += char in "[("
        depth -= char in "])"
        if depth == 0:
            break
    text = comment[: end + 1]
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None

    def build(node):
        if isinstance(node, (ast.List, ast.Tuple)):
            return type(node).__name__, [build(e) for e in node.elts]
        if isinstance(node, ast.Constant) and node.value is Ellipsis:
            return ...
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return Number(ast.get_source_segment(text, node))
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            number = build(node.operand)
            number.value = -number.value
            return number
        # arithmetic such as 8*109 + 7: exact integers; a name (C) is prose
        number = Number("0")
        number.value = eval(compile(ast.Expression(node), "<docs>", "eval"), {})  # noqa: S307
        return number

    try:
        return build(tree)
    except NameError:
        return None


def matches(expected, actual) -> bool:
    if isinstance(expected, Number):
        return isinstance(actual, (int, float, np.number)) and expected.matches(actual)
    if isinstance(expected, tuple) and expected[0] in ("List", "Tuple"):
        items = expected[1]
        if (
            isinstance(actual, np.ndarray)
            and actual.dtype.names is None
            and (expected[0] == "Tuple" and actual.ndim > 1)
        ):
            actual = actual.shape  # a tuple printed for an image: its shape
        elif isinstance(actual, np.ndarray) and expected[0] == "Tuple" and actual.shape == (1,):
            actual = actual[0].tolist()  # the one row a selection found
        elif isinstance(actual, (np.ndarray, np.void)):
            actual = actual.tolist()
        actual = list(actual) if isinstance(actual, (list, tuple)) else actual
        if not isinstance(actual, list):
            return False
        if items and items[-1] is ...:
            items = items[:-1]
            actual = actual[: len(items)]
        return len(items) == len(actual) and all(map(matches, items, actual))
    return expected == actual


def check_table(lines: list[str], actual: np.ndarray) -> None:
    """``# channel  first ...`` then rows of numbers: the structured array's first rows."""
    header = lines[0].split()
    rows = [line.split() for line in lines[1:]]
    assert len(actual) >= len(rows)
    for row, got in zip(rows, actual, strict=False):
        for name, text in zip(header, row, strict=False):
            assert Number(text).matches(got[name]), (name, text, got[name])


def statements_with_expectations(block: str):
    """``(source, expectation lines)`` for each statement of a block: the comment on its own
    last line, and the comment-only lines right below it."""
    lines = block.splitlines()
    tree = ast.parse(block)
    for i, node in enumerate(tree.body):
        source = ast.get_source_segment(block, node)
        comments = []
        tail = lines[node.end_lineno - 1][node.end_col_offset :].strip()
        if tail.startswith("#"):
            comments.append(tail[1:].strip())
        following = tree.body[i + 1].lineno - 1 if i + 1 < len(tree.body) else len(lines)
        for line in lines[node.end_lineno : following]:
            if line.strip().startswith("#"):
                comments.append(line.strip()[1:].strip())
        yield node, source, comments


@pytest.mark.real_weights
def test_the_numbers_in_analysis_md_are_what_the_code_gives():
    namespace: dict = {}
    checked = 0
    for block in code_blocks(DOCS / "analysis.md"):
        for node, source, comments in statements_with_expectations(block):
            try:
                if isinstance(node, ast.Expr):
                    value = eval(compile(ast.Expression(node.value), "<docs>", "eval"), namespace)  # noqa: S307
                else:
                    exec(compile(ast.Module([node], []), "<docs>", "exec"), namespace)  # noqa: S102
                    continue
            except NameError as exc:
                assert exc.name in READERS_NAMES, source
                continue
            if not comments:
                continue
            expected = parse_literal(comments[0])
            if expected is not None:
                assert matches(expected, value), (source, comments[0], value)
                checked += 1
            elif re.fullmatch(r"[a-z]+(\s+[a-z]+)+", comments[0]):
                check_table(comments, value)
                checked += 1
    assert checked >= 8  # every quoted value above was compared
    ns = namespace

    # The prose: channel 13 about 5x brighter inside the eye than outside, and first.
    eye_rows = na.rank_channels(ns["a"], region=_eye_box(ns["face"]), include_border=True)
    assert eye_rows["channel"][0] == 13 and round(float(eye_rows["ratio"][0])) == 5
    assert list(eye_rows["channel"][:5]).index(46) == 4  # 46 is fifth
    # Covered eye, whole image: 13 and 46 first, changes 26.7 and 17.1, then 12.8 for 10;
    # 554 -> 14 for channel 46 at the eye.
    whole = na.rank_channels(ns["a"], other=ns["b"])
    assert list(whole["channel"][:3]) == [13, 46, 10]
    for got, text in zip(whole["change"][:3], ("26.7", "17.1", "12.8"), strict=False):
        assert Number(text).matches(got), (text, got)
    at_eye = na.rank_channels(ns["a"], region=ns["eye"], other=ns["b"])
    row = at_eye[at_eye["channel"] == 46][0]
    assert round(float(row["first"])) == 554 and round(float(row["second"])) == 14
    # "the face is a 'neck brace' at 82 %, then 'wig'"
    (first, p), (second, _) = na.classify(ns["net"], ns["face"], top=2)
    assert (first, round(100 * p), second) == ("neck brace", 82, "wig")


def _eye_box(face: np.ndarray) -> np.ndarray:
    """The region of the docs' region-ranking example (rows 62-79, columns 67-98)."""
    eye = np.zeros(face.shape[:2], bool)
    eye[62:80, 67:99] = True
    return eye


@pytest.mark.gui
def test_the_tutorials_npe2_command_runs(make_napari_viewer):
    (block,) = [b for b in code_blocks(DOCS / "tutorial.md") if "commands.execute" in b]
    viewer = make_napari_viewer()
    viewer.open_sample("napari-activations", "face")
    exec(block, {"viewer": viewer})  # noqa: S102
    layer = viewer.layers["Face: conv1"]
    assert layer.data.shape == (64, 220, 180)
    weights = layer.metadata["napari_activations"]["weights"]
    assert weights["name"] == "caffe", weights  # the default: the built-in weights
    assert math.isfinite(float(np.asarray(layer.data.native).max()))
