"""Shared fixtures: a strict bridge, Flask apps with the extension and (through
tests.servers) real servers.

Every bridge here runs under ``aiobridge.pytest_plugin.bridge_guard``: the test
fails if the loop's exception handler was called (an exception nobody
retrieved, a callback that raised), a task was left pending, or a "never
awaited"/"unclosed" warning appeared.

A Flask app with the extension comes from the plugin's ``aiobridge_flask_app``
(on the plugin's bridge), or from its ``aiobridge_make_flask_app`` where a test needs what
that app cannot give: ``AIOBRIDGE_*`` settings read when the bridge is built,
the extension's options, or a bridge the app owns (``shutdown(app)`` stops it).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from aiobridge import AioThread, monitor

if TYPE_CHECKING:
    pass

pytest_plugins = ["tests.servers"]


@pytest.fixture
def bridge(aiobridge_bridge: AioThread) -> AioThread:
    """The tests' bridge: the plugin's ``aiobridge_bridge`` (what users get), one per test.

    A started bridge with a debug loop under the plugin's guard: the test fails
    if its loop's exception handler was called, a task was left pending, or a
    coroutine was never awaited or a resource never closed. (The root
    conftest.py's module-scoped ``bridge`` serves only the docstring examples,
    whose examples of one module build on one bridge.)
    """
    return aiobridge_bridge


def _undo_app_metrics() -> Iterator[None]:
    """Undo the metrics an app's ``/metrics`` endpoint installed for the process.

    ``AioBridge`` with ``AIOBRIDGE_METRICS_ENDPOINT`` (the demo's default) installs
    ``aiobridge.metrics`` on prometheus_client's default registry, once per process,
    as an app does at import. The next test must not inherit that observer (a docs
    example counting its own calls would see them counted twice, or refused):
    only that installation is undone; any other change of the observer factory
    still fails the test (tests/isolation.py).
    """
    before = monitor.observer_factory()
    yield
    metrics = sys.modules.get("aiobridge.metrics")
    if metrics is None or before is not None:
        return
    installed = metrics.installed()
    if installed is not None and installed.registry is metrics.REGISTRY:
        metrics.uninstall()


@pytest.fixture(autouse=True)
def _app_metrics_uninstalled() -> Iterator[None]:
    """After each test: see :func:`_undo_app_metrics`."""
    yield from _undo_app_metrics()


@pytest.fixture(scope="module", autouse=True)
def _app_metrics_uninstalled_per_module() -> Iterator[None]:
    """After each module, for apps a module-scoped fixture made: see :func:`_undo_app_metrics`."""
    yield from _undo_app_metrics()


@pytest.fixture
def default_bridge_stopped() -> Iterator[None]:
    """For a test that uses ``aiobridge.run()`` / ``default_bridge()``: stop the one it started.

    The process default bridge outlives the test otherwise (it stops at exit), and
    the next test would find it running (tests/isolation.py fails the test then).
    """
    import aiobridge.bridge

    def running() -> AioThread | None:
        default = aiobridge.bridge._default
        return default if default is not None and default.running else None

    before = running()
    yield
    after = running()
    if after is not None and after is not before:
        after.stop(5.0)
