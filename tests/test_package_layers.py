"""The harness's packages are layered: no package of ``huang2021`` imports, directly or through
others, a package that imports it (issue 22 found ``training`` importing ``evaluation``, which
imports ``training``; what both measure now lives below them, in ``measures``)."""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "examples" / "huang2021"


def package_imports() -> dict[str, set[str]]:
    """Each subpackage of ``huang2021`` -> the other subpackages its modules import (``from ..x import``)."""
    graph: dict[str, set[str]] = {}
    for package in sorted(path for path in HARNESS.iterdir() if (path / "__init__.py").exists()):
        imported = set()
        for path in package.glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                    imported.add(node.module.split(".")[0])
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("huang2021."):
                    imported.add(node.module.split(".")[1])
        graph[package.name] = {name for name in imported if (HARNESS / name / "__init__.py").exists() and name != package.name}
    return graph


def test_no_package_of_the_harness_reaches_itself_through_its_imports():
    graph = package_imports()
    assert graph["evaluation"] >= {"measures", "training", "data"}  # the graph is read, not empty

    def reached(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            package = todo.pop()
            if package not in seen:
                seen.add(package)
                todo.extend(graph.get(package, ()))
        return seen

    assert [package for package in graph if package in reached(package)] == []
    assert "evaluation" not in reached("training")
