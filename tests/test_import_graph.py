"""The package's modules import each other without cycles.

The graph is read statically with :mod:`ast` from the source files under ``phi_finetune/``; an
edge ``a -> b`` means module ``a`` imports module ``b``. The rule:

- **Module-level imports** (statements run when the module is first imported, including ones
  inside module-level ``if``/``try`` blocks) must form no cycle. These are the imports whose
  cycles break at import time, depending on which module is imported first.
- **Function-level imports** (inside a ``def``, run when called) must form no cycle either,
  together with the module-level ones: a lazy import still couples the two modules both ways,
  and a cycle there is the same design knot (``local/registry.py`` and ``local/training.py``
  were one).
- **``if TYPE_CHECKING:`` imports are excluded**: they never run, and annotations that name
  each other's types are not a dependency at run time.

``from pkg import name`` is an edge to ``pkg.name`` when that is a module of the package, else to
``pkg``. Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those implicit
parent edges are left out (Python initialises parents first, so they cannot deadlock), except
that a package's ``__init__`` importing its own submodule is an ordinary edge. Imports made
with ``importlib.import_module("...")`` (the lazy ``__getattr__`` exports) are not seen.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import phi_finetune

PACKAGE_ROOT = Path(phi_finetune.__file__).parent

Graph = dict[str, dict[str, str]]
"""module -> {imported module: where, as ``file:line``}."""


def module_files(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root`` by dotted name."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, *, functions: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements, skipping ``if TYPE_CHECKING:`` bodies (and ``def`` bodies unless
    ``functions``)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                if functions:
                    stack.append(child)
            else:
                stack.append(child)


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: Mapping[str, Path]
) -> Iterator[str]:
    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    if isinstance(node, ast.Import):
        for alias in node.names:
            found = resolve(alias.name)
            if found is not None:
                yield found
        return
    if node.level:
        base_parts = module.split(".") if is_package else module.split(".")[:-1]
        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        found = sub if sub in known else resolve(base)
        if found is not None:
            yield found


def import_graph(root: Path, *, functions: bool) -> Graph:
    """The package's import edges (see the module docstring for what counts)."""
    known = module_files(root)
    graph: Graph = {name: {} for name in known}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in _imports(tree, functions=functions):
            for target in _targets(node, module, is_package, known):
                if target != module:
                    graph[module].setdefault(target, f"{path}:{node.lineno}")
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or ``None`` (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        children = [iter(sorted(graph[start]))]
        state[start] = 1
        while children:
            child = next(children[-1], None)
            if child is None:
                state[path.pop()] = 2
                children.pop()
            elif state.get(child) == 1:
                return [*path[path.index(child) :], child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                children.append(iter(sorted(graph.get(child, {}))))
    return None


def describe(graph: Graph, cycle: list[str]) -> str:
    return "\n".join(f"  {a} -> {b}  ({graph[a][b]})" for a, b in itertools.pairwise(cycle))


@pytest.mark.parametrize("functions", [False, True], ids=["module-level", "with-function-level"])
def test_the_package_has_no_import_cycle(functions: bool) -> None:
    graph = import_graph(PACKAGE_ROOT, functions=functions)
    assert len(graph) > 50 and sum(len(v) for v in graph.values()) > 100  # the graph was read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle; move what both need into a module both import:\n" + (
        describe(graph, cycle or [])
    )


def test_local_registry_and_training_do_not_import_each_other() -> None:
    graph = import_graph(PACKAGE_ROOT, functions=True)
    registry, training = "phi_finetune.local.registry", "phi_finetune.local.training"
    assert training not in graph[registry] and registry not in graph[training]
    # Both use the shared names module instead.
    assert "phi_finetune.local._layout" in graph[registry]
    assert "phi_finetune.local._layout" in graph["phi_finetune.local.tracking"]


def _write_package(root: Path, files: Mapping[str, str]) -> Path:
    package = root / "pkg"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


def test_the_checker_finds_cycles_by_the_documented_rule(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        {
            "__init__.py": "from pkg import a\n",
            "a.py": "from . import b\n",
            "b.py": "def f():\n    from pkg.sub import c\n",
            "sub/__init__.py": "",
            "sub/c.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pkg.a import x\n"
                "def g():\n    import pkg.a\n"
            ),
            "d.py": "import pkg.b as alias\nfrom ..outside import nothing\n",
        },
    )
    module_level = import_graph(package, functions=False)
    assert set(module_level["pkg"]) == {"pkg.a"}
    assert set(module_level["pkg.a"]) == {"pkg.b"}
    assert module_level["pkg.b"] == {} and module_level["pkg.sub.c"] == {}  # lazy, TYPE_CHECKING
    assert set(module_level["pkg.d"]) == {"pkg.b"}
    assert module_level["pkg.a"]["pkg.b"] == f"{package / 'a.py'}:1"
    assert find_cycle(module_level) is None

    with_functions = import_graph(package, functions=True)
    cycle = find_cycle(with_functions)
    assert cycle is not None
    assert cycle[0] == cycle[-1] and set(cycle) == {"pkg.a", "pkg.b", "pkg.sub.c"}
    assert "b.py:2" in describe(with_functions, cycle)


def test_a_module_level_cycle_is_found(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        {
            "__init__.py": "",
            "x.py": "import pkg.y\n",
            "y.py": "try:\n    from pkg import x\nexcept ImportError:\n    pass\n",
        },
    )
    cycle = find_cycle(import_graph(package, functions=False))
    assert cycle is not None and set(cycle) == {"pkg.x", "pkg.y"}
