"""The package's shape, checked by tools rather than by a list of names.

- import-linter's contracts (``.importlinter``): the direction of imports
  between the layers, and no extra imported below the integrations;
- nothing outside ``aiobridge/_core`` touches another module's private state
  (an attribute starting with ``_`` that the module itself does not define);
- no module of the package passes 300 lines of code;
- the package's top level is exactly the public surface documented in ``docs/api.md``.
"""

from __future__ import annotations

import ast
import io
import pathlib
import shutil
import subprocess
import sys
import tokenize

import pytest

import aiobridge

PACKAGE = pathlib.Path(aiobridge.__file__).parent
ROOT = PACKAGE.parent
MAX_CODE_LINES = 300
PUBLIC_MODULES = {
    "__init__", "asgi", "bridge", "celery", "clients", "errors", "exit", "flask", "metrics",
    "monitor", "onloop", "pytest_plugin", "uwsgi",
}
PRIVATE_PACKAGES = {"_backends", "_core", "_features", "_flask", "_onloop"}


def _modules() -> list[pathlib.Path]:
    return sorted(PACKAGE.rglob("*.py"))


def code_lines(source: str) -> int:
    """Lines holding code: docstrings, comments and blank lines aside."""
    tree = ast.parse(source)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                end = body[0].end_lineno or body[0].lineno
                docstrings.update(range(body[0].lineno, end + 1))
    lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def test_code_lines_counts_code_only() -> None:
    source = '"""Doc.\n\nMore."""\n\n# comment\nimport os  # trailing\n\n\ndef f():\n' \
             '    """Doc."""\n    return (\n        1\n    )\n'
    assert code_lines(source) == 5  # import, def, and the three lines of the return


def test_import_contracts_are_kept() -> None:
    lint_imports = shutil.which("lint-imports") or str(pathlib.Path(sys.executable).parent
                                                      / "lint-imports")
    result = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_no_module_over_300_lines_of_code() -> None:
    sizes = {str(p.relative_to(PACKAGE)): code_lines(p.read_text()) for p in _modules()}
    too_big = {name: size for name, size in sizes.items() if size > MAX_CODE_LINES}
    assert not too_big, too_big


def test_nothing_outside_the_core_touches_private_state() -> None:
    found = []
    for path in _modules():
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "_core":
            continue
        tree = ast.parse(path.read_text())
        modules = {alias.asname or alias.name.split(".")[0]
                   for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for alias in node.names}
        own = _private_names_defined_in(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")) or node.attr in own:
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in modules:
                continue  # a private module of the package, imported by name
            found.append(f"{relative}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)


def _private_names_defined_in(tree: ast.Module) -> set[str]:
    """Private attributes and methods the module's own classes define."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    names.update(t.id for t in item.targets if isinstance(t, ast.Name))
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def test_the_private_state_check_can_fail() -> None:
    tree = ast.parse("class A:\n    def __init__(self):\n        self._mine = 1\n"
                     "def f(a, portal):\n    return a._mine, portal._lt\n")
    assert _private_names_defined_in(tree) == {"_mine"}


def test_the_top_level_is_the_public_surface() -> None:
    entries = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"
    }
    assert entries == PUBLIC_MODULES | PRIVATE_PACKAGES
    api = (ROOT / "docs" / "api.md").read_text()
    for module in PUBLIC_MODULES - {"__init__"}:
        assert f"aiobridge.{module}" in api, f"docs/api.md does not document aiobridge.{module}"


@pytest.mark.parametrize("package", sorted(PRIVATE_PACKAGES))
def test_each_private_package_says_what_it_holds(package: str) -> None:
    docstring = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
    assert docstring, f"aiobridge/{package}/__init__.py has no docstring"
