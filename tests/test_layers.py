"""The package's layers: imports between aiobridge's modules point one way, and the
feature modules use the internal engine, not the private parts of the AioThread facade."""

from __future__ import annotations

import ast
import pathlib

import aiobridge

PACKAGE = pathlib.Path(aiobridge.__file__).parent
FEATURE_MODULES = ("streams", "queues", "resources", "_combinators")


def _internal_imports(module: str, *, typing_only: bool = True) -> set[str]:
    """Modules of the package that ``module`` imports, anywhere in it (by default
    also the ones imported under ``if TYPE_CHECKING:``)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    skipped: set[int] = set()
    if not typing_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                skipped.update(id(inner) for inner in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.split(".")[0])
    return found & _modules()


def _modules() -> set[str]:
    return {path.stem for path in PACKAGE.glob("*.py")}


def test_only_the_layers_above_the_facade_import_it() -> None:
    above = {"__init__", "_default", "flask", "pytest_plugin"}
    importers = {module for module in _modules() if "bridge" in _internal_imports(module)}
    assert importers <= above, f"below AioThread but importing bridge.py: {importers - above}"
    # ... and the facade's own imports never lead back to it.
    reachable: set[str] = set()
    todo = list(_internal_imports("bridge", typing_only=False))
    while todo:
        module = todo.pop()
        if module not in reachable:
            reachable.add(module)
            todo.extend(_internal_imports(module))
    assert "bridge" not in reachable


def test_feature_modules_sit_below_the_facade() -> None:
    private = {"_check_may_block", "_on_loop_thread", "_timeout", "_core", "_ensure_running"}
    for module in FEATURE_MODULES:
        assert "bridge" not in _internal_imports(module), f"{module} imports bridge.py"
        tree = ast.parse((PACKAGE / f"{module}.py").read_text())
        used = {
            node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in private
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        }
        assert not used, f"{module} reaches into AioThread's private parts: {sorted(used)}"
