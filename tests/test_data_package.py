"""The data package is a one-way street: no module of ``huang2021/data`` imports, directly or through
others, a module that imports it (issue 22 found ``image_files`` and ``splits`` importing each other)."""

from __future__ import annotations

import ast
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "examples" / "huang2021" / "data"


def imports_within_package() -> dict[str, set[str]]:
    """Each module's name -> the package's modules it imports (``from .x import``, at any depth of the file)."""
    graph = {}
    for path in DATA.glob("*.py"):
        tree = ast.parse(path.read_text())
        graph[path.stem] = {
            node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        }
    return graph


def test_no_module_of_the_data_package_reaches_itself_through_its_imports():
    graph = imports_within_package()
    assert graph["splits"] >= {"image_files", "mnist5k", "errors"}  # the graph is read, not empty

    def reached(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph.get(module, ()))
        return seen

    assert [module for module in graph if module in reached(module)] == []
