"""The module layout stays a layered one: imports between streamlog's modules point one
way only (no import cycle), counting module-level imports and imports inside functions,
but not ``if TYPE_CHECKING:`` blocks."""

from __future__ import annotations

import ast
from pathlib import Path

import streamlog

PACKAGE = Path(streamlog.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level:
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = [f"{target}.{a.name}" for a in node.names]
    return [target, *names]


def _imports(path: Path) -> set[str]:
    module = _module_name(path)
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = ast.unparse(node.test)
            if "TYPE_CHECKING" in test:
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            found.update(_resolve(module, path.name == "__init__.py", node))

    Visitor().visit(tree)
    return found


def test_no_import_cycles_between_streamlog_modules():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        # a package's __init__ only re-exports: edges from it are not layering
        if path.name == "__init__.py":
            continue
        graph[name] = {m for m in _imports(path) if m in modules and m != name
                       and modules[m].name != "__init__.py"}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    # the core layers, top to bottom, exist as separate modules
    for name in ("streamlog.client", "streamlog.stream", "streamlog.delivery.consumer", "streamlog.delivery.groups",
                 "streamlog.delivery.cursor", "streamlog.delivery.windows", "streamlog.window"):
        assert name in graph, name


def test_nothing_outside_the_cli_imports_the_cli():
    """The command line is the top layer: no module outside ``streamlog/cli`` imports from
    it, at module level or inside a function (what they share lives below, e.g.
    ``streamlog/tables.py``)."""
    cli = PACKAGE / "cli"
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if path.is_relative_to(cli):
            continue
        found = sorted(m for m in _imports(path) if m == "streamlog.cli" or m.startswith("streamlog.cli."))
        if found:
            offenders[_module_name(path)] = found
    assert offenders == {}


#: the longest a module of streamlog may be (lines): one job per module, readable whole
MAX_MODULE_LINES = 500


def test_no_module_is_over_500_lines():
    lengths = {_module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES} == {}
