"""The package's modules import each other without a cycle (module-level and function-level imports alike)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib" / "tradeoffs"


def module_name(path: Path) -> str:
    parts = path.relative_to(LIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_graph() -> dict[str, set[str]]:
    """{module: the package modules it imports}."""
    modules = {module_name(p): p for p in LIB.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        graph[name] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                continue
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for alias in node.names:  # `from . import x` names a module; `from .x import y` names one in x
                found = f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                if found in modules and found != name:
                    graph[name].add(found)
    return graph


def test_no_import_cycle() -> None:
    graphlib.TopologicalSorter(imports_graph()).prepare()  # raises CycleError with the cycle


def test_the_check_sees_relative_imports_and_cycles() -> None:
    graph = imports_graph()
    assert "tradeoffs.results" in graph["tradeoffs.store"]
    assert "tradeoffs.perceptual" in graph["tradeoffs.chapters.inverted_u"]
    graph["tradeoffs.results"].add("tradeoffs.store")
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()
