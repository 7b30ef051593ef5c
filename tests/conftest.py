"""Shared fixtures: a strict bridge, Flask apps with the extension and (through
tests.servers) real servers.

Every bridge here runs under ``aiobridge.pytest_plugin.bridge_guard``: the test
fails if the loop's exception handler was called (an exception nobody
retrieved, a callback that raised), a task was left pending, or a "never
awaited"/"unclosed" warning appeared.

A Flask app with the extension comes from the plugin's ``aiobridge_flask_app``
(on the plugin's bridge), or from ``make_flask_app`` where a test needs what
that app cannot give: ``AIOBRIDGE_*`` settings read when the bridge is built,
the extension's options, or a bridge the app owns (``shutdown(app)`` stops it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from aiobridge import AioThread
from aiobridge.pytest_plugin import bridge_guard
from tests.helpers import FlaskAppFactory

if TYPE_CHECKING:
    from flask import Flask

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

@pytest.fixture
def make_flask_app() -> Iterator[FlaskAppFactory]:
    """Make testing Flask apps whose AioBridge extension owns its bridge.

    ``make_flask_app(name="test_app", *, app_class=Flask, async_views=True, **config)``:
    ``config`` goes into ``app.config`` before the extension is installed, so the
    bridge is built from it. Each bridge is started at once under the plugin's
    guard and stopped after the test (a test may stop it earlier with
    ``shutdown(app)``).
    """
    from flask import Flask

    from aiobridge.flask import EXTENSION_KEY, AioBridge

    with contextlib.ExitStack() as guards:

        def make(
            name: str = "test_app",
            *,
            app_class: type[Flask] = Flask,
            async_views: bool = True,
            **config: Any,
        ) -> Flask:
            app = app_class(name)
            app.config.update(TESTING=True, **config)
            AioBridge(app, async_views=async_views)
            guards.enter_context(bridge_guard(app.extensions[EXTENSION_KEY].get_bridge(app)))
            return app

        yield make
