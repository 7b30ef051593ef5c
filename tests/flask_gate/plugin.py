"""Pytest plugin: every Flask app a test creates gets ``AioBridge``, and the gate checks it ran.

Load it with ``-p tests.flask_gate.plugin`` (the repository root on ``sys.path``)
on Flask's own test suite:

- ``Flask.__init__`` is wrapped: each new app (subclasses too) gets
  ``AioBridge(app)``, with a bridge of its own built from the app's config;
- each test's apps have their bridges stopped at the test's teardown (apps made
  while collecting, at a test module's import, at the end of the session), and
  no loop thread may be left running;
- the gate: ``app.ensure_sync`` counts every call of an ``async def`` view,
  hook or handler, and each call must have been handed to the app's bridge
  (the bridges' ``stats().submitted`` grows by at least as much), and Flask's
  own ``Flask.async_to_sync`` (a new loop per call, through asgiref) must never
  run. A test whose async code bypassed the bridge errors at teardown with
  ``aiobridge was bypassed``.

``--aiobridge-bypass`` installs the extension with ``async_views=False``, which
leaves Flask's ``async_to_sync`` in place: every test that runs async code must
then fail. ``python -m tests.flask_gate`` runs that too, as the gate's own proof.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from aiobridge import AioThread
from aiobridge.flask import EXTENSION_KEY, AioBridge

BYPASSED = "aiobridge was bypassed"
_STOP_TIMEOUT = 5.0


class _Ledger:
    """What the apps of one test (or of collection time) did."""

    def __init__(self) -> None:
        # The bridges of the apps, not the apps: Flask's suite checks an app is freed
        # once unreferenced (test_app_freed_on_zero_refcount).
        self.bridges: list[AioThread] = []
        self.async_calls = 0  # async views/hooks/handlers called through ensure_sync
        self.flask_default_calls = 0  # Flask.async_to_sync: the extension bypassed
        self.lock = threading.Lock()

    def submitted(self) -> int:
        return sum(bridge.stats().submitted for bridge in self.bridges)


class _Gate:
    def __init__(self, bypass: bool) -> None:
        self.bypass = bypass
        self.collection = _Ledger()  # apps made outside any test (module level)
        self.current = self.collection
        self.originals: dict[str, Callable[..., Any]] = {}

    def install(self) -> None:
        gate = self
        original_init = Flask.__init__
        original_ensure_sync = Flask.ensure_sync
        original_async_to_sync = Flask.async_to_sync
        self.originals = {
            "__init__": original_init,
            "ensure_sync": original_ensure_sync,
            "async_to_sync": original_async_to_sync,
        }

        @functools.wraps(original_init)
        def __init__(app: Flask, *args: Any, **kwargs: Any) -> None:
            original_init(app, *args, **kwargs)
            if EXTENSION_KEY not in app.extensions:  # a subclass calling up twice
                extension = AioBridge(app, async_views=not gate.bypass)
                gate.current.bridges.append(extension.get_bridge(app))

        @functools.wraps(original_ensure_sync)
        def ensure_sync(app: Flask, func: Callable[..., Any]) -> Callable[..., Any]:
            sync = original_ensure_sync(app, func)
            if not inspect.iscoroutinefunction(func):
                return sync

            @functools.wraps(sync)
            def counted(*args: Any, **kwargs: Any) -> Any:
                ledger = gate.current
                with ledger.lock:
                    ledger.async_calls += 1
                return sync(*args, **kwargs)

            return counted

        @functools.wraps(original_async_to_sync)
        def async_to_sync(app: Flask, func: Callable[..., Any]) -> Callable[..., Any]:
            ledger = gate.current
            with ledger.lock:
                ledger.flask_default_calls += 1
            return original_async_to_sync(app, func)

        Flask.__init__ = __init__  # type: ignore[method-assign]
        Flask.ensure_sync = ensure_sync  # type: ignore[method-assign]
        Flask.async_to_sync = async_to_sync  # type: ignore[method-assign]

    def uninstall(self) -> None:
        for name, original in self.originals.items():
            setattr(Flask, name, original)


def _stop(ledger: _Ledger) -> list[str]:
    """Stop the ledger's bridges; name those whose loop thread is still alive."""
    alive = []
    for bridge in ledger.bridges:
        bridge.stop(_STOP_TIMEOUT)
        if bridge.thread is not None and bridge.thread.is_alive():
            alive.append(bridge.thread.name)
    return alive


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--aiobridge-bypass",
        action="store_true",
        help="install AioBridge with async_views=False (Flask's async_to_sync runs): "
        "the gate must then fail every test that runs async code",
    )


def pytest_configure(config: pytest.Config) -> None:
    gate = _Gate(bypass=config.getoption("--aiobridge-bypass"))
    gate.install()
    config.stash[_GATE] = gate


def pytest_unconfigure(config: pytest.Config) -> None:
    gate = config.stash.get(_GATE, None)
    if gate is not None:
        alive = _stop(gate.collection)
        gate.uninstall()
        assert not alive, f"loop threads left running: {alive}"


_GATE = pytest.StashKey[_Gate]()


@pytest.fixture(autouse=True)
def _aiobridge_on_every_app(request: pytest.FixtureRequest) -> Iterator[None]:
    gate = request.config.stash[_GATE]
    ledger = _Ledger()
    module_apps = gate.collection
    before = module_apps.submitted()
    gate.current = ledger
    try:
        yield
    finally:
        gate.current = module_apps
        submitted = ledger.submitted() + module_apps.submitted() - before
        alive = _stop(ledger)
    problems = []
    if ledger.flask_default_calls:
        problems.append(f"Flask's own async_to_sync ran {ledger.flask_default_calls} time(s)")
    if submitted < ledger.async_calls:
        problems.append(
            f"{ledger.async_calls} async view/hook/handler call(s), only {submitted} "
            "handed to a bridge"
        )
    if problems:
        pytest.fail(f"{BYPASSED}: " + "; ".join(problems), pytrace=False)
    assert not alive, f"loop threads left running after the test: {alive}"
