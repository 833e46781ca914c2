"""The layout of the package (docs/architecture.md): statistics and probes import no plotting
library, no import circle among the modules, no module grown past about 500 lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "layerscope"
MAX_LINES = 550


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "TYPE_CHECKING" or isinstance(n, ast.Attribute) and
               n.attr == "TYPE_CHECKING" for n in ast.walk(test))


def _statements(body: list[ast.stmt], *, deep: bool):
    """Import statements run on import (``deep``: also those inside functions and classes)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):  # annotations only, never run
                yield from _statements(node.body, deep=deep)
            yield from _statements(node.orelse, deep=deep)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _statements(block, deep=deep)
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            yield from _statements(node.body, deep=deep)
        elif deep and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield from _statements(node.body, deep=deep)


def import_graph(*, deep: bool = False) -> dict[str, set[str]]:
    """Module -> the layerscope modules it imports (``from pkg import name`` counts as importing
    ``pkg.name`` when that is a module, else ``pkg``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges = set()
        for node in _statements(ast.parse(path.read_text(encoding="utf-8")).body, deep=deep):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
                continue
            base = package[: len(package) - node.level + 1] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                target = f"{source}.{alias.name}"
                edges.add(target if target in modules else source)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first = last), or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(graph[child])))
    return None


def test_cycle_finder_finds_a_circle_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_relative_and_package_imports():
    graph = import_graph()
    assert "layerscope.errors" in graph["layerscope.probes.cka"]  # from ..errors import
    assert "layerscope.probes.table" in graph["layerscope.probes"]  # from .table import


def test_no_import_circle_among_the_modules():
    assert find_cycle(import_graph()) is None


def test_probes_and_stats_import_no_matplotlib():
    code = ("import layerscope.probes, layerscope.stats, sys; "
            "assert not any(m.startswith('matplotlib') for m in sys.modules), "
            "sorted(m for m in sys.modules if m.startswith('matplotlib'))[:3]")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_statistics_and_probes_never_import_the_figures():
    graph = import_graph(deep=True)
    for name, edges in graph.items():
        if name.startswith(("layerscope.stats", "layerscope.probes")):
            assert not {e for e in edges if e.startswith("layerscope.show")}, name


def test_no_module_is_over_about_500_lines():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
