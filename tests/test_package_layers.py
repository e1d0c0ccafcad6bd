"""The harness is layered: no package of ``huang2021`` imports, directly or through others, a
package that imports it, and within ``huang2021/data`` no module does so either (issue 22 found
``training`` importing ``evaluation``, which imports ``training``, and ``data/image_files`` and
``data/splits`` importing each other; what training and evaluation both measure now lives below
them, in ``measures``)."""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "examples" / "huang2021"


def _imports(path: Path) -> set[tuple[int, str]]:
    """``(level, first name)`` of each ``from ... import`` of the file, at any depth (level 0: ``huang2021.x`` as ``x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                found.add((node.level, node.module.split(".")[0]))
            elif node.module.startswith("huang2021."):
                found.add((2, node.module.split(".")[1]))
    return found


def package_imports() -> dict[str, set[str]]:
    """Each subpackage of ``huang2021`` -> the other subpackages its modules import."""
    packages = [path for path in sorted(HARNESS.iterdir()) if (path / "__init__.py").exists()]
    names = {package.name for package in packages}
    return {
        package.name: {name for path in package.glob("*.py") for level, name in _imports(path) if level == 2 and name in names - {package.name}}
        for package in packages
    }


def data_module_imports() -> dict[str, set[str]]:
    """Each module of ``huang2021/data`` -> the package's modules it imports (``from .x import``)."""
    return {path.stem: {name for level, name in _imports(path) if level == 1} for path in (HARNESS / "data").glob("*.py")}


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """The nodes of ``graph`` that reach themselves through its edges."""

    def reached(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(graph.get(node, ()))
        return seen

    return [node for node in graph if node in reached(node)]


def test_no_package_of_the_harness_reaches_itself_through_its_imports():
    graph = package_imports()
    assert graph["evaluation"] >= {"measures", "training", "data"}  # the graph is read, not empty
    assert cycles(graph) == []
    assert "evaluation" not in graph["training"]


def test_no_module_of_the_data_package_reaches_itself_through_its_imports():
    graph = data_module_imports()
    assert graph["splits"] >= {"image_files", "mnist5k", "errors"}
    assert cycles(graph) == []


def test_the_check_finds_a_cycle():
    assert sorted(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})) == ["a", "b", "c"]
