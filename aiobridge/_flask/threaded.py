"""Views sent to a thread pool when the app is served on the server's loop.

Under ``aiobridge.onloop`` a sync view runs in a greenlet on the loop's own
thread: one that blocks (``requests``, ``time.sleep``, heavy CPU, a blocking
database driver) stalls every request of the process. A view marked with
:func:`threaded`, or whose endpoint is listed in ``AIOBRIDGE_THREADED_VIEWS``,
runs in the thread pool of :func:`aiobridge.onloop.on_loop` instead (the
request greenlet waits by switching; bridged calls from that thread take the
thread-safe hand-off). Served by an ordinary WSGI server, nothing changes.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, has_request_context, request

__all__ = ("MARK", "install", "threaded")

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute :func:`threaded` sets on a view (``functools.wraps`` carries it over).
MARK = "aiobridge_threaded"
#: The environ key of ``aiobridge.onloop``'s runner (``aiobridge.onloop.IN_THREAD_KEY``).
_IN_THREAD_KEY = "aiobridge.run_in_thread"


def threaded(view: F) -> F:
    """Run this view in a thread when the app is served on the server's loop.

    Put it under ``@app.route``. Served by a WSGI server, it changes nothing.

    Example:
        >>> from flask import Flask
        >>> app = Flask("reports")
        >>> @app.get("/legacy-report")
        ... @threaded
        ... def legacy_report():
        ...     return "made with a blocking client"
        >>> legacy_report.aiobridge_threaded
        True
    """
    setattr(view, MARK, True)
    return view


def install(app: Flask) -> None:
    """Make ``app.ensure_sync`` send the views marked or listed to the pool, on the loop.

    The wrapper holds the app weakly: an app must stay free of reference cycles
    (Flask frees an unreferenced app at once, without the garbage collector).
    """
    app.config.setdefault("AIOBRIDGE_THREADED_VIEWS", ())
    previous = vars(app).get("ensure_sync")  # an instance's own override is kept
    app.ensure_sync = functools.partial(_ensure_sync, weakref.ref(app), previous)  # type: ignore[method-assign]


def _ensure_sync(app_ref: weakref.ref[Flask],
                 previous: Callable[[Callable[..., Any]], Callable[..., Any]] | None,
                 func: Callable[..., Any]) -> Callable[..., Any]:  # fmt: skip
    app = app_ref()
    if app is None:
        raise RuntimeError("ensure_sync() of a Flask app that no longer exists")
    synced = previous(func) if previous is not None else type(app).ensure_sync(app, func)
    if synced is not func or not has_request_context():
        return synced  # an async function: it runs on the loop anyway
    run_in_thread = request.environ.get(_IN_THREAD_KEY)
    if run_in_thread is None:
        return synced
    if getattr(func, MARK, False) or _listed(app, func):
        return functools.partial(run_in_thread, func)
    return synced


def _listed(app: Flask, func: Callable[..., Any]) -> bool:
    endpoint = request.endpoint
    listed = app.config.get("AIOBRIDGE_THREADED_VIEWS") or ()
    if isinstance(listed, str):
        listed = [name.strip() for name in listed.split(",")]
    return endpoint in listed and app.view_functions.get(endpoint) is func  # type: ignore[arg-type]
