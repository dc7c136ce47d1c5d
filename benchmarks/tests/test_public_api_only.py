"""The harness uses only the product's public API: no underscore name of llmembed is imported
and no private attribute of any object is read (the product may change those at any time)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.glob("llmembed_bench/*.py"), *ROOT.glob("scripts/*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_private_names(path: Path) -> None:
    tree = ast.parse(path.read_text())
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "llmembed":
            parts = (node.module or "").split(".") + [a.name for a in node.names]
            bad += [
                f"line {node.lineno}: from {node.module} import {p}"
                for p in parts
                if p.startswith("_") and p != "__version__"
            ]
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not (
                node.attr.startswith("__")
                or (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            )
        ):
            bad.append(f"line {node.lineno}: .{node.attr}")
    assert not bad, f"{path.name} uses private names: {bad}"


def test_the_scan_sees_the_harness() -> None:
    assert len(SOURCES) >= 15 and any(p.name == "methods.py" for p in SOURCES)
