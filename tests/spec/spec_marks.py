"""Which requirement IDs the test suite claims to prove, read from ``@pytest.mark.spec``.

Read from the source with ``ast`` rather than from collected items, so the answer is the
same whichever subset of the suite runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def spec_marks(path: Path) -> Iterator[tuple[str, int]]:
    """(ID, line) of every string argument of ``pytest.mark.spec(...)`` in a test file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "spec":
            parent = func.value
            if isinstance(parent, ast.Attribute) and parent.attr == "mark":
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        yield arg.value, node.lineno


def proven_ids() -> dict[str, list[str]]:
    """ID -> the test files that mark it."""
    out: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for rid, _ in spec_marks(path):
            out.setdefault(rid, []).append(str(path.relative_to(ROOT)))
    return out
