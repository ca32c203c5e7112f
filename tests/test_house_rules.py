"""House rules a reviewer would otherwise have to remember: short functions, and the formatter formats."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY_LINES = 60
"""Lines of code in one library function, docstring left out (STYLE: a function reads in one screen)."""


def _body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = function.body
    has_docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    first = body[1] if has_docstring and len(body) > 1 else body[0]
    return int(function.end_lineno or first.lineno) - first.lineno + 1


def test_no_library_function_is_longer_than_a_screen():
    long = []
    for path in sorted((ROOT / "cloudlulc").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _body_lines(node) > MAX_BODY_LINES:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({_body_lines(node)} lines)")
    assert not long, "split into named phases: " + ", ".join(long)


def test_the_formatter_is_never_switched_off():
    marked = []
    for folder in ("cloudlulc", "components", "pipelines", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if line.rstrip().endswith(("# fmt: skip", "# fmt: off")):
                    marked.append(f"{path.relative_to(ROOT)}:{number}")
    assert not marked, f"let `ruff format` format: {marked}"
