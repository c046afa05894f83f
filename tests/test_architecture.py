"""Imports flow one way: a lower layer never imports a higher one (see docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "prunekit"
RANK = {
    "errors": 0, "_version": 0, "registry": 0, "_atomic": 0,
    "layers": 1, "patterns": 1, "importance": 1, "schedules": 1, "graph": 1, "quant": 1,
    "masks": 2, "config": 2, "data": 2,
    "methods": 3, "training": 3, "llm": 3,
    "export": 4, "eval": 4, "runtime": 4,
    "api": 5, "recipes": 5, "specs": 5,
    "cli": 6,
}


def _top(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prunekit."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("prunekit.")}
    return out


def test_every_package_has_a_rank():
    tops = {_top(p) for p in SRC.rglob("*.py")} - {"__init__"}
    assert tops <= set(RANK), f"give these a layer in RANK and docs/architecture.md: {tops - set(RANK)}"


def test_imports_flow_downward():
    bad = []
    for path in SRC.rglob("*.py"):
        top = _top(path)
        if top == "__init__":
            continue
        for imported in _imports(path):
            if RANK.get(imported, 99) > RANK[top]:
                bad.append(f"{path.relative_to(SRC)} imports prunekit.{imported}")
    assert not bad, "upward imports: " + "; ".join(sorted(bad))
