"""A WSGI app (Flask) served by an ASGI server: stop the bridges at lifespan shutdown.

uvicorn (and other ASGI servers) can serve a WSGI app through an adapter such
as a2wsgi. After its graceful shutdown uvicorn re-raises SIGTERM with the
default handler: the process dies by the signal and ``atexit`` hooks never
run, so the bridges would never close their pools. The ASGI *lifespan*
protocol tells the app when the server shuts down; :func:`lifespan` answers
it by stopping every bridge of the worker process (in a thread, so the
server's own loop is not blocked), before the server exits.

Example:
    >>> from flask import Flask
    >>> from aiobridge.asgi import from_wsgi
    >>> from aiobridge.flask import AioBridge
    >>> flask_app = Flask(__name__)
    >>> ext = AioBridge(flask_app)
    >>> app = from_wsgi(flask_app)  # serve with: uvicorn module:app --lifespan on
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .exit import stop_all

__all__ = ("from_wsgi", "lifespan")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def lifespan(
    app: ASGIApp,
    *,
    on_startup: Callable[[], object] | None = None,
    on_shutdown: Callable[[], object] = stop_all,
) -> ASGIApp:
    """Wrap an ASGI app that has no lifespan of its own (a WSGI adapter).

    The wrapper answers the lifespan messages itself, and passes every other
    scope (``http``, ``websocket``) to ``app``. The hooks are blocking
    callables run in a thread.

    Args:
        app: the ASGI app, e.g. ``a2wsgi.WSGIMiddleware(flask_app)``.
        on_startup: run at lifespan startup, e.g. ``aiobridge.default_bridge``
            to start the loop before the first request. A failure is reported
            to the server, which then does not start.
        on_shutdown: run at lifespan shutdown (default: stop every bridge of
            the process, see :func:`aiobridge.exit.stop_all`).

    Returns:
        The ASGI app to give the server (run it with lifespan on: uvicorn's
        default ``--lifespan auto`` does).

    Example:
        >>> import functools
        >>> from a2wsgi import WSGIMiddleware
        >>> from aiobridge.flask import shutdown
        >>> app = lifespan(WSGIMiddleware(flask_app),  # doctest: +SKIP
        ...                on_shutdown=functools.partial(shutdown, flask_app))
    """

    async def with_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if not await _run_hook(on_startup, send, "lifespan.startup"):
                    return
            elif message["type"] == "lifespan.shutdown":
                await _run_hook(on_shutdown, send, "lifespan.shutdown")
                return

    return with_lifespan


async def _run_hook(hook: Callable[[], object] | None, send: Send, stage: str) -> bool:
    try:
        if hook is not None:
            await asyncio.to_thread(hook)
    except Exception as exc:
        await send({"type": f"{stage}.failed", "message": f"{type(exc).__name__}: {exc}"})
        return False
    await send({"type": f"{stage}.complete"})
    return True


def from_wsgi(wsgi_app: Callable[..., Any], **adapter_options: Any) -> ASGIApp:
    """A WSGI app as an ASGI app (through a2wsgi) that stops the bridges at shutdown.

    Args:
        wsgi_app: e.g. a Flask app.
        **adapter_options: passed to ``a2wsgi.WSGIMiddleware`` (``workers``,
            ``send_queue_size``).

    Raises:
        ImportError: a2wsgi is not installed (``pip install a2wsgi``).

    Example:
        >>> app = from_wsgi(flask_app, workers=20)  # doctest: +SKIP
    """
    try:
        from a2wsgi import WSGIMiddleware
    except ImportError as exc:
        raise ImportError(
            "aiobridge.asgi.from_wsgi() needs a2wsgi: pip install a2wsgi "
            "(or wrap any WSGI-to-ASGI adapter with aiobridge.asgi.lifespan())"
        ) from exc
    return lifespan(WSGIMiddleware(wsgi_app, **adapter_options))  # type: ignore[arg-type]
