"""The demo app in tests: one way to make it, its bridge under the plugin's guard.

:func:`guarded_demo_app` builds ``demo_flask.create_app(config)``. When the
mode's views run on an aiobridge bridge (the ``bridge`` mode, through the
extension), that bridge starts at once under
:func:`aiobridge.pytest_plugin.bridge_guard`, as the plugin's
``aiobridge_make_flask_app`` does for a plain Flask app: the test fails if a task
was left pending, an exception went unretrieved on the loop, or a coroutine was
never awaited or a client never closed. On exit the guard checks and stops the
bridge, then ``demo_flask.shutdown(app)`` releases whatever else the mode holds
(its clients and loops, in every mode).

The ``demo_app`` fixture makes such apps for one test; a module-scoped fixture
enters :func:`guarded_demo_app` itself. A test module imports the fixture (and
lists it in ``__all__``). Tests of the demo's shutdown itself call
``create_app`` and ``shutdown`` themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from flask import Flask

from aiobridge.flask import EXTENSION_KEY, AioBridge
from aiobridge.pytest_plugin import bridge_guard
from demo_flask import create_app, shutdown

__all__ = ("DemoAppFactory", "demo_app", "guarded_demo_app")

#: ``demo_app(config)``: a demo app built from ``config``, checked and shut down after the test.
DemoAppFactory = Callable[[Mapping[str, Any]], Flask]


@contextlib.contextmanager
def guarded_demo_app(config: Mapping[str, Any]) -> Iterator[Flask]:
    """The demo app built from ``config``, its bridge (if any) under ``bridge_guard``."""
    app = create_app(config)
    try:
        extension = app.extensions.get(EXTENSION_KEY)
        guard = (bridge_guard(extension.get_bridge(app)) if isinstance(extension, AioBridge)
                 else contextlib.nullcontext())  # fmt: skip
        with guard:
            yield app
    finally:
        shutdown(app)


@pytest.fixture
def demo_app() -> Iterator[DemoAppFactory]:
    """Make demo apps from a config; each is checked and shut down after the test."""
    with contextlib.ExitStack() as apps:

        def make(config: Mapping[str, Any]) -> Flask:
            return apps.enter_context(guarded_demo_app(config))

        yield make
