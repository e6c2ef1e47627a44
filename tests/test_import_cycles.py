"""No import cycles between our own modules, nor between our packages.

The graph is read statically from the source (ast), so a cycle hidden in a function body
counts as much as one at the top of a file: both bind the two modules together. Imports
under `if TYPE_CHECKING:` count too: they never run, but a back-reference for the type
checker still ties two modules together (agent/guards.py takes a narrow protocol of the call
instead, as agent/tools.py does with `Hangup`). Two levels are checked: modules
(`agent.call` -> `agent.guards`), and the top-level units they live in (`policies/` ->
`sessions/`), since a package that needs another which needs it back cannot be read, tested
or moved on its own.

The token server's package (server/) is the one exception: each of its modules is a unit of
its own, as each was when they lay at the root. It holds both the app, which composes ops,
sales and the page (`server.app` -> `ops.install`), and what those share with it (settings,
the error shape, logging, the LiveKit token: `ops.api` -> `server.errors`), so as one unit
it would "cycle" with every package it serves. A cycle between its modules and another
package's still fails the module check.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.support import ROOT

# Production code only: tests and benches import everything and nothing imports them.
SKIPPED_DIRS = {"tests", "bench", "scripts", "docs", "build", "node_modules"}
# Packages whose modules are units of their own (see above).
MODULES_AS_UNITS = {"server"}


def our_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for path in ROOT.glob("*.py"):
        modules[path.stem] = path
    for init in ROOT.glob("*/__init__.py"):
        package = init.parent
        if package.name in SKIPPED_DIRS or package.name.startswith("."):
            continue
        for path in package.rglob("*.py"):
            if any(part in SKIPPED_DIRS for part in path.relative_to(ROOT).parts):
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_in(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest of our modules `name` is, or is inside (`a.b.C` -> `a.b`)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in imports_in(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        for target in targets:
            resolved = resolve(target, modules)
            if resolved is not None and resolved != name:
                found.add(resolved)
    return found


def module_graph() -> dict[str, set[str]]:
    modules = our_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def unit_graph(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    def unit(name: str) -> str:
        top = name.partition(".")[0]
        return name if top in MODULES_AS_UNITS else top

    graph: dict[str, set[str]] = {}
    for name, targets in modules.items():
        edges = graph.setdefault(unit(name), set())
        edges.update(unit(t) for t in targets if unit(t) != unit(name))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of nodes (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [one_cycle(graph, group) for group in groups]


def one_cycle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest way from the group's first node back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle in {group}")


def described(found: list[list[str]]) -> str:
    return "\n".join(" -> ".join(cycle) for cycle in found)


def test_the_graph_sees_our_imports():
    # A graph that missed imports would find no cycle either: check it sees the known ones.
    graph = module_graph()
    assert "server.livekit_token" in graph["server.token_endpoint"]
    assert "redisdb.keys" in graph["policies.admission"]  # `from redisdb import keys`
    assert "agents_catalog.loader" in graph["agents_catalog"]
    assert "web" in graph["server.app"]  # imported inside a function
    assert "server.app" in graph["token_server"]
    # The guards know the call only through a protocol of their own.
    assert "agent.call" not in graph["agent.guards"]
    assert "agent.guards" in graph["agent.call"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert unit_graph({"p.x": {"q.y"}, "q.y": set(), "q.z": {"p.w"}, "p.w": set()}) == {
        "p": {"q"},
        "q": {"p"},
    }
    # server/'s modules are units: the app may compose ops, which uses the error shape.
    server_and_ops = {"server.app": {"ops.x"}, "ops.x": {"server.errors"}, "server.errors": set()}
    assert cycles(unit_graph(server_and_ops)) == []
    assert unit_graph({"ops.x": {"server.errors"}})["ops"] == {"server.errors"}


def test_no_module_imports_itself_back():
    found = cycles(module_graph())
    assert not found, "import cycles between modules:\n" + described(found)


def test_no_package_imports_itself_back():
    found = cycles(unit_graph(module_graph()))
    assert not found, "import cycles between packages and root modules:\n" + described(found)
