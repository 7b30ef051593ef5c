"""The docs' examples are tests: a broken or leaking example fails the suite.

Runs the repository's root ``conftest.py`` (Sybil over README.md, docs/*.md and
docstrings) on small pages of its own, in a subprocess (pytester).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FENCE = "```"


def run_pages(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, **pages: str
) -> pytest.RunResult:
    # The root conftest imports tests.servers (the suite's real servers).
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    shutil.copy(ROOT / "conftest.py", pytester.path / "conftest.py")
    (pytester.path / "docs").mkdir()
    for name, text in pages.items():
        (pytester.path / "docs" / f"{name}.md").write_text(text, encoding="utf-8")
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "docs", timeout=120)


def test_a_page_whose_example_runs_passes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = f"""# Good

{FENCE}python
import asyncio
from aiobridge import AioThread

with AioThread() as bridge:
    answer = bridge.run(asyncio.sleep(0, result=42))
{FENCE}

{FENCE}python
assert answer == 42  # the page's blocks share one namespace
{FENCE}

{FENCE}sh
this is not run
{FENCE}
"""
    run_pages(pytester, monkeypatch, good=page).assert_outcomes(passed=2)


def test_a_broken_example_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    page = f"""# Broken

{FENCE}python
from aiobridge import AioThread

with AioThread() as bridge:
    bridge.run(undefined_name)
{FENCE}
"""
    result = run_pages(pytester, monkeypatch, broken=page)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*NameError*undefined_name*"])


def test_a_page_that_leaves_a_bridge_running_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = f"""# Leaky

{FENCE}python
from aiobridge import AioThread

bridge = AioThread().start()  # never stopped
{FENCE}
"""
    result = run_pages(pytester, monkeypatch, leaky=page)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*AssertionError: the page left bridges running: ?'bridge'?; stop them*"]
    )


def test_no_page_keeps_a_template_placeholder() -> None:
    # Pages filled from a benchmark run use __NAME__ markers while drafted.
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    left = {
        page.name: re.findall(r"__[A-Z][A-Z_]*__", page.read_text(encoding="utf-8"))
        for page in pages
    }
    assert {name: found for name, found in left.items() if found} == {}
