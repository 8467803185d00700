"""The layout is the architecture: imports flow one way, with no cycle, and stay light.

Each part of the package (a top-level module, or a subpackage taken whole) may
import only the parts listed for it in ``ALLOWED``.  The test reads every
import statement in the source, at any depth, including those under
``if TYPE_CHECKING:`` and inside functions, so a cycle cannot hide behind a
lazy import.  Inside a subpackage, modules must not form a cycle either.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import trio_feed

PACKAGE = Path(trio_feed.__file__).parent

# part -> the parts it may import (besides itself).  Read it bottom-up: each row
# may only name rows above it.
ALLOWED: dict[str, set[str]] = {
    "_version": set(),
    "_value": set(),
    "_errors": set(),
    "wire": {"_value", "_errors"},
    "binance": {"_value", "_errors"},
    "_tls_stream": set(),
    "_connection": {"_value", "_errors", "_tls_stream", "wire"},
    "_pipelines": {"_value", "_errors", "_connection", "wire"},
    # REST (the weight budget, the one httpx client) sits below both of its callers: the
    # books' snapshots and the back-fill of feeds and recordings, which import it only when
    # asked to.
    "rest": {"_errors", "binance"},
    "recording": {"_errors", "_connection", "wire", "binance", "rest"},
    "feed": {"_value", "_errors", "_connection", "_pipelines", "wire", "binance", "rest"},
    "books": {"_errors", "binance", "feed", "rest"},
    "exchange": {"_errors", "wire", "binance", "recording"},
    "broker": {"_errors", "binance", "feed", "recording"},
    "bridge": {"_errors", "binance", "feed"},
    "testing": {"_errors", "_connection", "wire", "binance", "recording", "exchange", "feed"},
    "cli": {"_version", "_errors", "_connection", "wire", "binance", "recording", "feed", "books",
            "exchange", "broker", "rest"},
    "__init__": {"_version", "_errors", "_connection", "_pipelines", "binance", "feed", "books",
                 "rest"},
    "__main__": {"cli"},
}

# Third-party packages a part may not import (beyond ALLOWED's own rule).
FORBIDDEN_THIRD_PARTY = {
    "wire": {"trio", "trio_websocket", "httpx"},
    "binance": {"trio", "trio_websocket", "httpx"},
    "_errors": {"trio"},
    "feed": {"httpx"},
    "exchange": {"httpx"},
    "rest": {"trio_websocket"},
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = _module_name(path)
    is_package = path.name == "__init__.py"
    base = me.split(".") if is_package else me.split(".")[:-1]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                target = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                target = node.module or ""
            found.append(target)
            # ``from . import books`` names a module too
            for alias in node.names:
                found.append(f"{target}.{alias.name}")
    return found


def _part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "trio_feed":
        return None
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _known_modules() -> set[str]:
    return {_module_name(p) for p in _sources()}


def test_every_part_is_listed() -> None:
    parts = {_part(_module_name(p)) for p in _sources()}
    assert parts <= set(ALLOWED), f"add these parts to ALLOWED: {parts - set(ALLOWED)}"


def test_imports_flow_one_way() -> None:
    known = _known_modules()
    wrong = []
    for path in _sources():
        me = _module_name(path)
        mine = _part(me)
        assert mine is not None
        for target in _imports(path):
            if target not in known:
                top = target.split(".")[0]
                if top in FORBIDDEN_THIRD_PARTY.get(mine, set()):
                    wrong.append(f"{me} imports {target}")
                continue
            theirs = _part(target)
            if theirs is None or theirs == mine:
                continue
            if theirs not in ALLOWED[mine]:
                wrong.append(f"{me} imports {target} ({mine} may not import {theirs})")
    assert not wrong, "\n".join(wrong)


def test_the_allowed_table_itself_has_no_cycle() -> None:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(part: str, path: list[str]) -> None:
        if state.get(part) == 1:
            raise AssertionError("cycle: " + " -> ".join([*path, part]))
        if state.get(part) == 2:
            return
        state[part] = 1
        for dep in ALLOWED[part]:
            visit(dep, [*path, part])
        state[part] = 2
        order.append(part)

    for part in ALLOWED:
        visit(part, [])


def test_no_import_cycle_between_modules() -> None:
    known = _known_modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for path in _sources():
        me = _module_name(path)
        for target in _imports(path):
            if target in known and target != me:
                # A package's __init__ re-exports its modules: importing a module
                # of the package is not an edge back to the package.
                if me.startswith(target + "."):
                    continue
                graph[me].add(target)
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 1:
            cycles.append(" -> ".join([*path[path.index(node):], node]))
            return
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in sorted(graph[node]):
            visit(dep, [*path, node])
        state[node] = 2

    for node in sorted(known):
        visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_import_trio_feed_imports_no_httpx_exchange_or_cli() -> None:
    code = ("import sys, trio_feed\n"
            "heavy = [m for m in ('httpx', 'trio_feed.exchange', 'trio_feed.cli', "
            "'trio_feed.books', 'trio_feed.rest._client', 'trio_websocket', 'coredis') "
            "if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == ""


def test_lazy_names_are_still_served() -> None:
    from trio_feed import DEFAULT_REST_URL, open_order_books
    from trio_feed.books import open_order_books as direct

    assert open_order_books is direct
    assert DEFAULT_REST_URL.startswith("https://")
