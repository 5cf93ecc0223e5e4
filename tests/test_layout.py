"""The library's layout, checked from its import graph: arrows run one way and nothing imports in a circle.

Entry points (``cli``, and ``dags/``, ``ray_serve/``, ``benchmarks/`` outside the library) import the
capability packages, which import ``platform``. Every import counts, at module level, inside a function or
under ``TYPE_CHECKING``: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flightline.platform.config import PROJECT_DIR

LIBRARY = PROJECT_DIR / "src" / "flightline"
FOUNDATION = "platform"
ENTRY_POINTS = ("cli", "__main__")
OUTSIDE_THE_LIBRARY = ("dags", "ray_serve", "benchmarks", "tests", "feature_repo", "plugins")
MAX_MODULE_LINES = 500


def module_files(root: Path) -> dict[str, Path]:
    """{dotted module name: file} for a package folder (a package is named by its ``__init__``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: the modules of the same library it imports}; ``from a import b`` names ``a.b`` when that is a
    module, else ``a``."""
    modules = module_files(root)
    library = root.name
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name].update(t for t in targets if t.split(".")[0] == library and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def subpackage(module: str) -> str:
    """``flightline.serving.router`` -> ``serving``; a top-level module its own name (``__main__``); the top
    package ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def subpackage_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    collapsed: dict[str, set[str]] = {}
    for module, targets in graph.items():
        collapsed.setdefault(subpackage(module), set()).update(
            subpackage(t) for t in targets if subpackage(t) != subpackage(module)
        )
    return collapsed


GRAPH = import_graph(LIBRARY)


def test_no_module_imports_another_in_a_circle() -> None:
    assert find_cycle(GRAPH) is None, f"import cycle: {' -> '.join(find_cycle(GRAPH) or [])}"


def test_no_subpackage_imports_another_in_a_circle() -> None:
    packages = subpackage_graph(GRAPH)
    cycle = find_cycle(packages)
    if cycle:
        def importers(a: str, b: str) -> list[str]:
            return sorted(m for m in GRAPH if subpackage(m) == a and any(subpackage(t) == b for t in GRAPH[m]))

        arrows = [f"{a} -> {b}: {importers(a, b)}" for a, b in zip(cycle, cycle[1:], strict=False)]
        pytest.fail("subpackage cycle " + " -> ".join(cycle) + "\n" + "\n".join(arrows))


def test_platform_imports_nothing_above_it() -> None:
    upward = {m: sorted(t for t in GRAPH[m] if subpackage(t) != FOUNDATION)
              for m in GRAPH if subpackage(m) == FOUNDATION}
    assert {m: t for m, t in upward.items() if t} == {}


def test_only_entry_points_import_entry_points() -> None:
    wrong = {m: sorted(t for t in GRAPH[m] if subpackage(t) in ENTRY_POINTS)
             for m in GRAPH if subpackage(m) not in ENTRY_POINTS}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_the_library_never_imports_the_code_around_it() -> None:
    found = []
    for name, path in module_files(LIBRARY).items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{name} imports {n}" for n in names if n.split(".")[0] in OUTSIDE_THE_LIBRARY]
    assert found == []


def test_every_subpackage_says_what_it_holds_and_may_import() -> None:
    undocumented = [str(init.relative_to(LIBRARY)) for init in sorted(LIBRARY.glob("*/__init__.py"))
                    if not (ast.get_docstring(ast.parse(init.read_text())) or "").strip()]
    assert undocumented == []


def test_no_module_is_over_the_line_limit() -> None:
    long = {str(p.relative_to(LIBRARY)): n for p in LIBRARY.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"split these by idea: {long}"


def test_the_checks_see_a_cycle_through_a_lazy_import(tmp_path: Path) -> None:
    """The graph is only as good as its parsing: a cycle hidden in a function body and a relative import must
    both be found, and a subpackage cycle named."""
    root = tmp_path / "lib"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for init in (root, root / "a", root / "b"):
        (init / "__init__.py").write_text('"""doc"""\n')
    (root / "a" / "one.py").write_text("from lib.b import two\n")
    (root / "b" / "two.py").write_text("def later():\n    from ..a import one\n")
    (root / "b" / "three.py").write_text("from . import two\n")
    graph = import_graph(root)
    assert graph["lib.b.three"] == {"lib.b.two"}
    assert find_cycle(graph) in (["lib.a.one", "lib.b.two", "lib.a.one"], ["lib.b.two", "lib.a.one", "lib.b.two"])
    (root / "b" / "two.py").write_text("def later():\n    pass\n")
    assert find_cycle(import_graph(root)) is None
