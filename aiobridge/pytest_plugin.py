"""Pytest fixtures for testing code that uses aiobridge.

Installed with aiobridge and enabled automatically through the ``pytest11``
entry point (``-p no:aiobridge`` turns it off). Fixtures:

``aiobridge_bridge``
    A started :class:`~aiobridge.AioThread` for one test, stopped after it. The
    test **fails** (an error at teardown) if it leaves what aiobridge promises
    never happens: a task still pending on the loop when the test ends, a
    "coroutine ... was never awaited" warning, an unclosed resource warning
    ("Unclosed client session"), or any call of the loop's exception handler
    ("Task was destroyed but it is pending", an exception never retrieved).
``aiobridge_bridge_options``
    The keyword arguments of that bridge (default ``{"debug": True}``, so
    tasks record where they were created). Override it in a ``conftest.py`` to
    test on uvloop or with ``max_in_flight``.
``aiobridge_no_loop_blocking``
    The test **fails** if a view served on the server's loop
    (:mod:`aiobridge.onloop`) blocked the loop longer than its bridge's
    ``slow_callback_duration`` while the test ran; the failure names the
    route and the stack (see :func:`no_loop_blocking`).
``aiobridge_flask_app``
    A ``Flask`` app with the :class:`~aiobridge.flask.AioBridge` extension on
    ``aiobridge_bridge``. Flask is imported only when a test asks for it.
``aiobridge_make_flask_app``
    Makes ``Flask`` apps whose extension owns its bridge, built from the
    ``AIOBRIDGE_*`` settings you pass:
    ``aiobridge_make_flask_app(name, *, app_class=Flask, async_views=True, **config)``.
    Each bridge runs under :func:`bridge_guard` and is stopped after the test
    (the test may stop it earlier with :func:`aiobridge.flask.shutdown`).

:func:`bridge_guard` applies the same checks to any bridge, e.g. the one your
app's extension owns.

Example:
    >>> def test_total(aiobridge_bridge):
    ...     async def add(a, b):
    ...         return a + b
    ...     assert aiobridge_bridge.run(add(1, 2)) == 3
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ._core.awaitables import await_chain, code_of
from .bridge import AioThread

if TYPE_CHECKING:
    from flask import Flask

__all__ = ("BridgeProblems", "FlaskAppFactory", "bridge_guard", "no_loop_blocking")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

# Generous: a loaded CI machine can be slow, and the loop may be busy.
_LOOP_DEADLINE = 30.0


class BridgeProblems:
    """What went wrong on a bridge during a test; empty when all is well."""

    def __init__(self) -> None:
        self.pending_tasks: list[str] = []
        self.handler_calls: list[str] = []
        self.warnings: list[str] = []
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.pending_tasks or self.handler_calls or self.warnings)

    def report(self) -> str:
        """A message listing every problem, with what to do about each kind."""
        lines: list[str] = []
        if self.pending_tasks:
            lines.append(
                "tasks still pending on the bridge's loop when the test ended "
                "(await, cancel or stop them in the test):"
            )
            lines += [f"  {task}" for task in self.pending_tasks]
        if self.handler_calls:
            lines.append("the loop's exception handler was called:")
            lines += [f"  {call}" for call in self.handler_calls]
        if self.warnings:
            lines.append("warnings aiobridge promises never happen:")
            lines += [f"  {warning}" for warning in self.warnings]
        return "\n".join(lines)

    def _handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        with self._lock:
            self.handler_calls.append(_describe_context(context))
        loop.default_exception_handler(context)  # still logged, as without the guard

    def _add_warning(self, text: str) -> None:
        with self._lock:
            self.warnings.append(text)


def _describe_context(context: dict[str, Any]) -> str:
    message = str(context.get("message", "unknown error"))
    extra = context.get("exception") or context.get("task") or context.get("future")
    return f"{message}: {extra!r}" if extra is not None else message


@contextlib.contextmanager
def _watch_warnings(problems: BridgeProblems) -> Iterator[None]:
    """Record "never awaited" and "unclosed" warnings from every thread.

    They are shown whatever the active filters say (even where an ``error``
    filter would turn them into an exception nobody sees, raised in ``__del__``
    on the loop thread), and still passed on to pytest's own warning capture.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("always", message=".*was never awaited", category=RuntimeWarning)
        warnings.filterwarnings("always", message="unclosed", category=ResourceWarning)
        shown = warnings.showwarning

        def record(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: Any = None,
            line: str | None = None,
        ) -> None:
            text = str(message)
            if (issubclass(category, RuntimeWarning) and "was never awaited" in text) or (
                issubclass(category, ResourceWarning) and "unclosed" in text.lower()
            ):
                problems._add_warning(f"{category.__name__}: {text} ({filename}:{lineno})")
            shown(message, category, filename, lineno, file, line)

        warnings.showwarning = record
        yield


def _install_handler(loop: asyncio.AbstractEventLoop, problems: BridgeProblems) -> None:
    installed = threading.Event()

    def install() -> None:
        loop.set_exception_handler(problems._handler)
        installed.set()

    loop.call_soon_threadsafe(install)
    if not installed.wait(_LOOP_DEADLINE):
        raise RuntimeError(f"the bridge's loop did not run a callback in {_LOOP_DEADLINE} s")


def _describe_task(task: asyncio.Task[Any]) -> str:
    """The task's name and the chain of coroutines it is suspended in, ours left out."""
    steps: list[str] = []
    for awaitable, frame in await_chain(task.get_coro()):
        code = code_of(awaitable)
        if code is not None and not code.co_filename.startswith(_PACKAGE_DIR):
            where = f"{code.co_filename}:{frame.f_lineno}" if frame is not None else "done"
            steps.append(f"{code.co_qualname}() at {where}")
    return f"task {task.get_name()!r}: " + (" -> ".join(steps) or repr(task))


async def _pending_tasks() -> list[str]:
    await asyncio.sleep(0)  # let tasks that just finished their work complete
    me = asyncio.current_task()
    return [
        _describe_task(task) for task in asyncio.all_tasks() if task is not me and not task.done()
    ]


@contextlib.contextmanager
def bridge_guard(bridge: AioThread, *, stop_timeout: float = 5.0) -> Iterator[AioThread]:
    """Start ``bridge``, check it while the block runs, stop it, then fail on problems.

    On exit it lists the tasks still pending on the loop, stops the bridge
    (which cancels them and closes its queues and resources), collects garbage so
    a dropped coroutine or client session warns now, and calls ``pytest.fail``
    with every problem found (see :class:`BridgeProblems`).

    Args:
        bridge: the bridge to check; started if needed.
        stop_timeout: passed to ``bridge.stop()`` (0 when tasks were left
            pending: they are cancelled at once).

    Example:
        >>> from aiobridge import AioThread
        >>> with bridge_guard(AioThread()) as bridge:
        ...     bridge.run(asyncio.sleep(0, result="ok"))
        'ok'
    """
    problems = BridgeProblems()
    with _watch_warnings(problems):
        loop = bridge.start().loop
        _install_handler(loop, problems)
        try:
            yield bridge
        finally:
            if bridge.running:
                future = asyncio.run_coroutine_threadsafe(_pending_tasks(), loop)
                problems.pending_tasks = future.result(_LOOP_DEADLINE)
            # Leaks are reported anyway: cancel them now rather than wait for them.
            bridge.stop(0 if problems.pending_tasks else stop_timeout)
            gc.collect()
    if problems:
        pytest.fail(problems.report(), pytrace=False)


class _BlockedViews(logging.Handler):
    """Collects the watchdog's reports of a view that blocked the loop (``aiobridge.onloop``)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reports: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        route = getattr(record, "aiobridge_route", None)
        if route is not None:
            self.reports.append((str(route), str(getattr(record, "aiobridge_stack", ""))))


@contextlib.contextmanager
def no_loop_blocking() -> Iterator[list[tuple[str, str]]]:
    """Fail the test if a view served on the loop (``aiobridge.onloop``) blocked it.

    The bridge's watchdog reports a view that held the loop longer than
    ``slow_callback_duration``; on exit from the block every report fails the
    test with the route and the stack of the view. The list yielded holds the
    ``(route, stack)`` reports so far.

    Example:
        >>> with no_loop_blocking():  # doctest: +SKIP
        ...     client.get(f"{server_url}/report")
    """
    handler = _BlockedViews()
    logger = logging.getLogger("aiobridge")
    logger.addHandler(handler)
    try:
        yield handler.reports
    finally:
        logger.removeHandler(handler)
    if handler.reports:
        pytest.fail("\n".join(
            f"the view of {route} blocked the event loop (aiobridge.onloop); send it to a "
            f"thread with @aiobridge.flask.threaded or AIOBRIDGE_THREADED_VIEWS. It was at:\n"
            f"{stack}" for route, stack in handler.reports), pytrace=False)


@pytest.fixture
def aiobridge_no_loop_blocking() -> Iterator[list[tuple[str, str]]]:
    """The test fails if a view served on the loop blocked it (:func:`no_loop_blocking`)."""
    with no_loop_blocking() as reports:
        yield reports


@pytest.fixture
def aiobridge_bridge_options() -> dict[str, Any]:
    """Keyword arguments for :class:`~aiobridge.AioThread` in ``aiobridge_bridge``."""
    return {"debug": True}


@pytest.fixture
def aiobridge_bridge(aiobridge_bridge_options: dict[str, Any]) -> Iterator[AioThread]:
    """A started bridge for one test; the test fails on leaked tasks and warnings."""
    options = {"name": "aiobridge-test", **aiobridge_bridge_options}
    with bridge_guard(AioThread(**options)) as bridge:
        yield bridge


#: ``make(name="aiobridge_test_app", *, app_class=Flask, async_views=True, **config)``.
FlaskAppFactory = Callable[..., "Flask"]


@pytest.fixture
def aiobridge_make_flask_app() -> Iterator[FlaskAppFactory]:
    """Make testing Flask apps whose extension owns its bridge, built from ``config``.

    ``config`` goes into ``app.config`` (with ``TESTING=True``) before the
    extension is installed. Each bridge starts at once under :func:`bridge_guard`
    and is stopped after the test.

    Example:
        >>> def test_deadline(aiobridge_make_flask_app):
        ...     app = aiobridge_make_flask_app("shop", AIOBRIDGE_TIMEOUT=0.5)
        ...     assert app.test_client().get("/missing").status_code == 404
    """
    from flask import Flask

    from .flask import EXTENSION_KEY, AioBridge

    with contextlib.ExitStack() as guards:

        def make(
            name: str = "aiobridge_test_app",
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


@pytest.fixture
def aiobridge_flask_app(aiobridge_bridge: AioThread) -> Flask:
    """A testing ``Flask`` app whose async views run on ``aiobridge_bridge``."""
    from flask import Flask

    from .flask import AioBridge

    app = Flask("aiobridge_test_app")
    app.config["TESTING"] = True
    AioBridge(app, bridge=aiobridge_bridge)
    return app
