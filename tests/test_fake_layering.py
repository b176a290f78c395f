"""The fake's layering holds: route handlers use the store's public API, nothing private.

Static checks with ``ast`` (no azure import needed), plus a check that the checker itself
catches what it should.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import phi_finetune.testing as testing_pkg

PKG = Path(testing_pkg.__file__).resolve().parent
ROUTE_MODULES = sorted(PKG.glob("_routes_*.py"))


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def private_accesses(source: str, filename: str, *, allow_self: bool = False) -> list[str]:
    """``file:line: expr`` for every ``x._name`` where ``x`` is not an imported module."""
    tree = ast.parse(source, filename)
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {(a.asname or a.name).split(".")[0] for a in node.names}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        if not node.attr.startswith("_") or _is_dunder(node.attr):
            continue
        base = node.value
        if isinstance(base, ast.Name) and base.id in modules:
            continue
        if allow_self and isinstance(base, ast.Name) and base.id == "self":
            continue
        found.append((node.lineno, f"{filename}:{node.lineno}: {ast.unparse(node)}"))
    return [text for _, text in sorted(found)]


def test_there_are_route_modules_to_check() -> None:
    names = {p.name for p in ROUTE_MODULES}
    assert {"_routes_workspace.py", "_routes_endpoints.py", "_routes_jobs.py"} <= names


def test_route_modules_access_no_private_attribute() -> None:
    found = []
    for path in ROUTE_MODULES:
        found += private_accesses(path.read_text(encoding="utf-8"), path.name)
    assert found == [], "route handlers must use FakeStore's public API:\n" + "\n".join(found)


def test_route_modules_do_not_know_the_fake() -> None:
    for path in [*ROUTE_MODULES, PKG / "_router.py"]:
        tree = ast.parse(path.read_text(encoding="utf-8"), path.name)
        imported = {
            f"{node.module}.{a.name}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
            for a in node.names
        }
        offending = {i for i in imported if "_fake_service" in i or i.endswith(".FakeAzureML")}
        assert offending == set(), f"{path.name} imports {offending}"


def test_dispatcher_and_fake_reach_only_into_themselves() -> None:
    for name in ("_dispatch.py", "_fake_service.py"):
        path = PKG / name
        found = private_accesses(path.read_text(encoding="utf-8"), name, allow_self=True)
        assert found == [], "\n".join(found)


def test_every_handler_takes_the_store() -> None:
    from phi_finetune.testing._dispatch import all_routes

    routes = all_routes()
    assert len(routes) > 40
    for r in routes:
        first = next(iter(inspect.signature(r.handler).parameters.values()))
        assert (first.name, first.annotation) == ("store", "FakeStore"), r.name


def test_the_checker_catches_private_access() -> None:
    bad = (
        "import re\n"
        "def handler(fake, req, m):\n"
        "    re._compile('x', 0)\n"
        "    return fake._jobs.get(m['name'])\n"
        "def other(store):\n"
        "    return store.get_job('a'), store.scope.__class__, store._endpoints\n"
    )
    assert private_accesses(bad, "bad.py") == [
        "bad.py:4: fake._jobs",
        "bad.py:6: store._endpoints",
    ]
    assert private_accesses("def f(self):\n    return self._x\n", "s.py") == ["s.py:2: self._x"]
    assert private_accesses("def f(self):\n    return self._x\n", "s.py", allow_self=True) == []
