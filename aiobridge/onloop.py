"""Serve a WSGI app (Flask) on the ASGI server's own event loop, one greenlet per request.

Behind an ASGI server (uvicorn, gunicorn with uvicorn workers, granian), a
WSGI app normally runs in a thread pool, and each bridged call is a round trip
between two OS threads. :func:`on_loop` runs each request in a greenlet on the
server's loop thread instead, and the process's bridge *adopts* that loop
(still one loop per process): a bridged call made by a view (``ext.run()``,
``bridge.run()``, an ``async def`` view) switches to the loop and back, a few
microseconds, and every contract of the bridge holds as in a thread.

The price: code that blocks (``requests``, ``time.sleep``, heavy CPU, a
blocking driver) stalls every request of the process while it runs. Send such
views to a thread pool with ``@aiobridge.flask.threaded`` or the
``AIOBRIDGE_THREADED_VIEWS`` config list; the watchdog names the route of a view
that blocked the loop (see ``docs/on-loop.md``).

Needs the ``onloop`` extra (``pip install aiobridge[onloop]``: greenlet).

Example:
    >>> from flask import Flask
    >>> from aiobridge.flask import AioBridge
    >>> from aiobridge.onloop import on_loop
    >>> flask_app = Flask(__name__)
    >>> ext = AioBridge(flask_app)
    >>> app = on_loop(flask_app)  # uvicorn module:app --loop uvloop --http httptools
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, TypeVar

import greenlet

from ._core.context import copy_back
from ._onloop.greenlets import Driver, RequestGreenlet
from ._onloop.wsgi import ON_LOOP_KEY, RequestBody, Responder, build_environ, serve
from .bridge import AioThread, default_bridge

__all__ = ("IN_THREAD_KEY", "ON_LOOP_KEY", "OnLoop", "in_request_greenlet", "on_loop",
           "run_in_thread")

logger = logging.getLogger("aiobridge")

T = TypeVar("T")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: The environ key of the request's :func:`run_in_thread` (read by the Flask extension).
IN_THREAD_KEY = "aiobridge.run_in_thread"

_getcurrent = greenlet.getcurrent


def in_request_greenlet() -> bool:
    """True when called in a request served by :func:`on_loop` (on the loop's thread).

    Example:
        >>> in_request_greenlet()
        False
    """
    return type(_getcurrent()) is RequestGreenlet


class OnLoop:
    """The ASGI app of :func:`on_loop` (see there)."""

    def __init__(self, app: WSGIApp, *, bridge: AioThread | None, threads: int,
                 stop_timeout: float) -> None:
        self.app = app
        self.stop_timeout = stop_timeout
        self._bridge = bridge
        self._threads = threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._adopted: AioThread | None = None

    @property
    def bridge(self) -> AioThread:
        """The bridge that runs on the server's loop (chosen at the first use)."""
        if self._bridge is None:
            ext = getattr(self.app, "extensions", {}).get("aiobridge")
            get_bridge = getattr(ext, "get_bridge", None)
            self._bridge = get_bridge(self.app) if get_bridge else default_bridge(start=False)
        return self._bridge

    def adopt(self) -> AioThread:
        """Make the bridge adopt the running loop (lifespan startup, else the first request)."""
        bridge = self._adopted
        if bridge is None:
            bridge = self._adopted = self.bridge.adopt()
        return bridge

    async def astop(self) -> None:
        """Stop the bridge and the views' thread pool (lifespan shutdown)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        bridge = self._adopted
        if bridge is not None:
            await bridge.astop(self.stop_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # a WSGI app has no websockets: refuse (the server answers 403)
            await receive()
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._adopted is None:
            self.adopt()  # a server run without lifespan
        message = await receive()
        request = message["type"] == "http.request"
        context = _getcurrent().gr_context  # the request task's own context
        driver = Driver(context, receive)
        body = RequestBody(driver, receive, message.get("body", b"") if request else b"",
                           bool(message.get("more_body")) if request else False)
        driver.disconnected = not request
        environ = build_environ(scope, body)
        environ[IN_THREAD_KEY] = self.run_in_thread
        responder = Responder(driver, send)
        glet = RequestGreenlet(functools.partial(serve, self.app, environ, responder, driver),
                               driver, environ)
        glet.gr_context = context
        await driver.drive(glet)
        if responder.error is not None:
            raise responder.error  # after the start of the response: the server aborts it

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            stage = message["type"]
            try:
                if stage == "lifespan.startup":
                    self.adopt()
                elif stage == "lifespan.shutdown":
                    await self.astop()
            except Exception as exc:
                await send({"type": f"{stage}.failed", "message": f"{type(exc).__name__}: {exc}"})
                return
            await send({"type": f"{stage}.complete"})
            if stage == "lifespan.shutdown":
                return

    def run_in_thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in the views' thread pool; the request greenlet waits.

        Outside a request greenlet, ``fn`` is simply called. ``fn`` runs in a
        copy of the caller's context (Flask's ``request``, ``g``), and what it
        sets is copied back. Bridged calls made there take the thread-safe
        hand-off, as from any thread.
        """
        glet = _getcurrent()
        if type(glet) is not RequestGreenlet:
            return fn(*args, **kwargs)
        pool = self._pool
        if pool is None:
            pool = self._pool = concurrent.futures.ThreadPoolExecutor(
                self._threads, thread_name_prefix="aiobridge-view")
        context = contextvars.copy_context()
        future = pool.submit(context.run, fn, *args, **kwargs)
        try:
            return glet.io(asyncio.wrap_future(future))
        finally:
            copy_back(context)


def on_loop(app: WSGIApp, *, bridge: AioThread | None = None, threads: int = 8,
            stop_timeout: float = 5.0) -> OnLoop:
    """An ASGI app serving the WSGI ``app`` on the server's loop, one greenlet per request.

    At lifespan startup the bridge adopts the server's loop; at lifespan
    shutdown it stops (drains its calls, cancels the tasks it owns, closes its
    resources) and the loop is left to the server.

    Args:
        app: the WSGI app, e.g. a Flask app.
        bridge: the bridge that adopts the server's loop (default: the Flask
            extension's bridge of ``app``, else :func:`aiobridge.default_bridge`).
            It must not have been used before the server started.
        threads: size of the thread pool of views sent to threads
            (``@aiobridge.flask.threaded``, ``AIOBRIDGE_THREADED_VIEWS``).
        stop_timeout: seconds in-flight calls get at shutdown.

    Returns:
        The ASGI app to give the server.

    Example:
        >>> from flask import Flask
        >>> flask_app = Flask("shop")
        >>> app = on_loop(flask_app, threads=4)  # give "module:app" to the server
        >>> type(app).__name__
        'OnLoop'
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    return OnLoop(app, bridge=bridge, threads=threads, stop_timeout=stop_timeout)


def run_in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run blocking ``fn`` in the current request's thread pool (else call it directly).

    For a blocking call inside a view served by :func:`on_loop` (a ``requests``
    call, a blocking driver) that should not stall the loop.

    Example:
        >>> run_in_thread(sum, [1, 2, 3])
        6
    """
    glet = _getcurrent()
    if type(glet) is RequestGreenlet:
        runner = glet.environ.get(IN_THREAD_KEY)
        if runner is not None:
            return runner(fn, *args, **kwargs)  # type: ignore[no-any-return]
    return fn(*args, **kwargs)
