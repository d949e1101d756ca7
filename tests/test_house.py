"""The package's shape, enforced: no import circles, no reaching into another module's private names, and the
size limits that keep every module readable (600 lines a module, 300 a class, 60 a function; benchmarks: 600 lines
a module)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "convcheck"
MODULE_LINES, CLASS_LINES, FUNCTION_LINES = 600, 300, 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in MODULES.items()}


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every import of a convcheck module, at any depth
    (an import inside a function closes a circle as surely as one at the top)."""
    found = []
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.startswith("convcheck")]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            if not source.startswith("convcheck"):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:  # ``from convcheck import checker`` imports the module itself
                    found.append((submodule, None, node.lineno))
                else:
                    found.append((source, alias.name, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    """Module → the convcheck modules it imports. The package ``convcheck`` itself is left out: its
    ``__init__`` only names the public API lazily, so importing it imports nothing."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for module in MODULES:
        for target, _, _ in _imports(module):
            if target in MODULES and target != module and target != "convcheck":
                graph[module].add(target)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return circles


def test_the_package_has_no_import_circle():
    assert _circles(_graph()) == []


def test_a_circle_is_found_when_there_is_one():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_names():
    private = [
        f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} imports {target}.{name}"
        for module in MODULES
        for target, name, line in _imports(module)
        if name is not None and name.startswith("_") and not name.startswith("__") and target != module
    ]
    assert private == []


def _sizes() -> list[tuple[str, str, int, int]]:
    """``(where, kind, lines, limit)`` for every module, class and function."""
    rows = []
    for module, tree in TREES.items():
        path = MODULES[module].relative_to(PACKAGE.parent)
        rows.append((str(path), "module", len(MODULES[module].read_text(encoding="utf-8").splitlines()), MODULE_LINES))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                kind, limit = ("class", CLASS_LINES) if isinstance(node, ast.ClassDef) else ("function", FUNCTION_LINES)
                rows.append((f"{path}:{node.lineno} {node.name}", kind, node.end_lineno - node.lineno + 1, limit))
    return rows


@pytest.mark.parametrize("kind", ["module", "class", "function"])
def test_every_module_class_and_function_is_within_its_size_limit(kind):
    too_long = [
        f"{where}: {lines} lines (limit {limit})" for where, k, lines, limit in _sizes() if k == kind and lines > limit
    ]
    assert too_long == []


def test_every_benchmark_module_is_within_the_module_size_limit():
    benchmarks = PACKAGE.parent / "benchmarks"
    too_long = [
        f"{path.relative_to(PACKAGE.parent)}: {lines} lines (limit {MODULE_LINES})"
        for path in sorted(benchmarks.glob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MODULE_LINES
    ]
    assert too_long == []
