"""Runs every code example of the documentation as a test (see docs/CONTRIBUTING-docs.md).

Sybil collects README.md, docs/*.md and the docstrings of aiobridge/ (its private packages too):

- a fenced ``python`` block runs, in page order, in one namespace per page;
- ``<!-- skip: next "reason" -->`` before a block skips it (say why);
- ``<!-- invisible-code-block: python -->`` runs setup the reader does not see;
- ``>>>`` examples (in docstrings, or a ``python`` block that starts with ``>>>``)
  are doctests. Docstring examples find ``bridge`` (a started bridge, one per
  module, checked like the pytest plugin's), ``redis_url`` and ``upstream_url``.

While a page that mentions ``REDIS_URL`` or ``UPSTREAM_URL`` runs, those
variables point at the suite's real Redis and dog service (tests/servers.py),
so examples read them like an application reads its configuration.

A page is checked as a whole for process globals it leaves changed (the
environment, aiobridge's observer factory, the default bridge; see
tests/isolation.py): the page fails, and the globals are put back.
"""

from __future__ import annotations

import doctest
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser
from sybil.parsers.rest import DocTestParser

import aiobridge.pytest_plugin
from aiobridge import AioThread
from aiobridge._core.process import stop_all
from aiobridge.pytest_plugin import bridge_guard

# tests.isolation first: it clears the environment before any server starts.
pytest_plugins = ["tests.isolation", "tests.servers", "pytester"]

DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def pytest_configure(config: pytest.Config) -> None:
    # An installed aiobridge registers its plugin through the pytest11 entry
    # point; a checkout on PYTHONPATH, or an install older than the plugin, does not.
    if not config.pluginmanager.has_plugin("aiobridge"):
        config.pluginmanager.register(aiobridge.pytest_plugin, "aiobridge")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep each page's examples together and in page order, wherever the page lands.

    pytest-randomly shuffles the tests (and moves each page as a whole, where
    the page first appears in its order); a page's examples share a namespace
    and build on each other, so they run one after the other, top to bottom.
    """
    pages: dict[Any, list[pytest.Item]] = {}
    for item in items:
        example = getattr(item, "example", None)
        if example is not None:
            pages.setdefault(item.parent, []).append(item)
    if not pages:
        return
    ordered: list[pytest.Item] = []
    for item in items:
        page = pages.pop(item.parent, None) if getattr(item, "example", None) else None
        if page is not None:
            ordered.extend(sorted(page, key=lambda i: i.example.region.start))  # type: ignore[attr-defined]
        elif getattr(item, "example", None) is None:
            ordered.append(item)
    items[:] = ordered


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the bridges examples leave running (``aiobridge.run``'s default bridge).

    The exit hook would stop them anyway, but only once the interpreter is
    exiting, where another thread can hold the GIL long enough for asyncio's
    debug mode (``-X dev``) to report the loop's next callback as slow.
    """
    stop_all(2.0)


@pytest.fixture
def docs_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point REDIS_URL/UPSTREAM_URL at the suite's servers for a page that uses them."""
    text = request.node.example.document.text
    if "REDIS_URL" in text or "UPSTREAM_URL" in text:
        monkeypatch.setenv("REDIS_URL", request.getfixturevalue("redis_url"))
        monkeypatch.setenv("UPSTREAM_URL", request.getfixturevalue("upstream").url)


@pytest.fixture(scope="module")
def bridge() -> Iterator[AioThread]:
    """The bridge docstring examples call ``bridge``: one per module, under the guard.

    Sybil puts it back into the namespace before every example, so an example
    that binds ``bridge`` to a bridge of its own does not affect the next one.
    """
    with bridge_guard(AioThread(name="doctest", debug=True)) as started:
        yield started


@pytest.fixture(scope="session")
def upstream_url(upstream: Any) -> str:
    """Base URL of the suite's dog service (``GET /health`` answers ``ok``)."""
    return str(upstream.url)


_PAGE_GLOBALS = "__aiobridge_globals_before_page__"


def _page_setup(namespace: dict[str, Any]) -> None:
    # A page reads like a script: Flask(__name__) and logging see "__main__".
    namespace["__name__"] = "__main__"
    _docstrings_setup(namespace)


def _docstrings_setup(namespace: dict[str, Any]) -> None:
    from tests.isolation import Globals  # a plugin (pytest_plugins): imported by pytest first

    namespace[_PAGE_GLOBALS] = Globals.now()


def _stop_leftovers(namespace: dict[str, Any]) -> None:
    """Stop what a page left running, then fail it: examples must clean up."""
    from aiobridge import bridge as _default

    left = [
        name for name, value in namespace.items() if isinstance(value, AioThread) and value.running
    ]
    for name in left:
        namespace[name].stop()
    default = _default._default
    if default is not None and default.running:
        default.stop()  # aiobridge.run() on a page: the process-wide bridge, stopped per page
    if "flask" in sys.modules:  # an app with the extension: stop its bridge like worker_exit
        from flask import Flask

        from aiobridge.flask import shutdown

        for value in list(namespace.values()):
            if isinstance(value, Flask):
                shutdown(value)
    if left:
        raise AssertionError(f"the page left bridges running: {left}; stop them or use `with`")
    before = namespace[_PAGE_GLOBALS]
    changes = type(before).now().changes_since(before)
    if changes:
        raise AssertionError("the page left process globals changed:\n  " + "\n  ".join(changes))


pytest_collect_file = (
    Sybil(
        parsers=[PythonCodeBlockParser(doctest_optionflags=DOCTEST_FLAGS), SkipParser()],
        patterns=["README.md", "docs/*.md"],
        excludes=["docs/benchmark-report.md"],
        fixtures=["docs_env"],
        setup=_page_setup,
        teardown=_stop_leftovers,
        name="docs",
    )
    + Sybil(
        parsers=[DocTestParser(optionflags=DOCTEST_FLAGS)],
        patterns=["aiobridge/*.py", "aiobridge/*/*.py"],
        fixtures=["bridge", "redis_url", "upstream_url"],
        setup=_docstrings_setup,
        teardown=_stop_leftovers,
        name="docstrings",
    )
).pytest()
