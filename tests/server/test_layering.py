"""Imports point one way: ``server -> protocol`` and ``client -> protocol``.

Only the command-line dispatcher (``client/commands/cli.py``) knows both shells, and it names the
server's modules as strings for a lazy import, so it needs no exception here. Every module is
scanned for ``import`` statements anywhere in it (function bodies and ``TYPE_CHECKING``
blocks included: a lazy or type-only import is still a dependency), subpackages included
(``protocol/testing/``, ``protocol/spec/``, ``server/testserver/``, ``client/conformance/``,
``client/bench/``, ``client/commands/``).
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "server", "client")

#: package -> (forbidden prefixes, allowed exceptions among them)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # the core is pure: nothing of ours outside itself, and no I/O framework
    "protocol": ("pushwire.server", "pushwire.client", "trio"),
    "server": ("pushwire.client",),
    "client": ("pushwire.server",),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["pushwire", *parts])


def our_modules() -> dict[str, Path]:
    return {
        module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def imported_modules(path: Path, submodules: Collection[str] = ()) -> list[str]:
    """Every module ``path`` imports. ``from package import name`` imports
    ``package.name`` when that is one of ``submodules``, else ``package``."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: use absolute imports across subpackages"
            assert node.module is not None
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.append(full if full in submodules else node.module)
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imported_modules(path):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[package]):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    assert found == []


def test_the_protocol_core_imports_nothing_of_ours_outside_itself() -> None:
    found = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / "protocol").rglob("*.py"))
        for name in imported_modules(path)
        if name.startswith("pushwire.") and not name.startswith("pushwire.protocol")
    ]
    assert found == []


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports (explicitly; the packages a submodule import
    initialises on the way are not counted, as Python tolerates those)."""
    modules = our_modules()
    return {
        name: {imported for imported in imported_modules(path, modules) if imported in modules}
        - {name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> Iterator[list[str]]:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                yield from visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                yield sorted(component)

    for node in sorted(graph):
        if node not in index:
            yield from visit(node)


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert list(cycles(graph)) == [["a", "b", "c"]]


#: Cycles tolerated for now, each inside one tool's own package: the conformance runner
#: imports its cases lazily to register them (and each case imports the runner), and the
#: test server's modules name each other under TYPE_CHECKING. Nothing may join them, and a
#: cycle anywhere else fails.
TOLERATED_CYCLES = ("pushwire.client.conformance.", "pushwire.server.testserver.")


def test_our_modules_import_each_other_without_a_cycle() -> None:
    graph = import_graph()
    assert "pushwire.server.session" in graph  # the scan sees our modules
    untolerated = [
        cycle
        for cycle in cycles(graph)
        if not any(all(m.startswith(prefix) for m in cycle) for prefix in TOLERATED_CYCLES)
    ]
    assert untolerated == []


def test_the_session_does_not_import_the_server_that_runs_it() -> None:
    graph = import_graph()
    assert "pushwire.server.session" in graph["pushwire.server.serve"]
    for cycle in cycles(graph):
        assert "pushwire.server.session" not in cycle
        assert "pushwire.server.serve" not in cycle
    assert not any(m.startswith("pushwire.server.serve") for m in graph["pushwire.server.session"])


#: The client library (not its commands or tools): written with anyio, so that it runs on
#: asyncio's loop as well as trio's.
CLIENT_LIBRARY = ("client/__init__.py", "client/connection.py", "client/errors.py")


def test_the_client_library_uses_neither_event_loop_directly() -> None:
    found = [
        f"{path} imports {name}"
        for path in CLIENT_LIBRARY
        for name in imported_modules(ROOT / path)
        if name.split(".")[0] in ("trio", "asyncio", "sniffio")
    ]
    assert found == []
    assert "anyio" in imported_modules(ROOT / "client/connection.py")
