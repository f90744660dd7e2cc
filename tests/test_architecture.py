"""The package's shape: no import cycle between its modules, no module grown too long."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "carecycle_webhooks"
MAX_LINES = 600
# Still too long: issue 10's store protocols split it. Until then it
# may not grow; remove the name once its split is in.
TOO_LONG_FOR_NOW: dict[str, int] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted((SOURCE / PACKAGE).rglob("*.py"))}


def imported(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` imports, at module level or inside functions.

    ``from x import y`` imports the module ``x.y`` when there is one, else it reads ``y``
    from ``x``. Importing a submodule also runs its parent packages' ``__init__`` first,
    but the importer's own parents are in ``sys.modules`` by then: those edges are left out.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in MODULES else source)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected set of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            members: list[str] = []
            while not members or members[-1] != node:
                members.append(stack.pop())
            if len(members) > 1:
                found.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_imports_of_every_kind() -> None:
    # A function-level import, relative from a subpackage and absolute: the graph would
    # otherwise miss the lazy imports that keep --help fast.
    assert f"{PACKAGE}._cli" in GRAPH[f"{PACKAGE}.__main__"]
    assert f"{PACKAGE}._verify" in set().union(*(GRAPH[name] for name in GRAPH if "._cli" in name))
    assert f"{PACKAGE}._errors" in GRAPH[f"{PACKAGE}._verify"]


def test_cycles_are_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package() -> None:
    # A cycle makes import order matter and keeps the modules from being understood alone.
    # The package __init__ re-exports the public names and nothing under it imports it back.
    assert cycles(GRAPH) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_too_long(name: str) -> None:
    path = MODULES[name]
    limit = TOO_LONG_FOR_NOW.get(path.name, MAX_LINES) if path.parent.name == PACKAGE else MAX_LINES
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= limit, f"{path.relative_to(SOURCE)} has {lines} lines: split it by what it does"
