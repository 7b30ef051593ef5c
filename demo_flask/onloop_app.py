"""The ``bridge-loop`` mode: the demo's Flask app on the ASGI server's own loop.

:func:`create_asgi_app` builds the unchanged Flask app (mode ``bridge-loop``,
whose views and clients are the ``bridge`` mode's) and serves it with
:func:`aiobridge.onloop.on_loop`: one greenlet per request on the server's
loop, which the app's bridge adopts at lifespan startup; a view's bridged call
switches to the loop instead of crossing between two OS threads. Served by::

    uvicorn --factory demo_flask.onloop_app:create_asgi_app --loop uvloop --http httptools
    gunicorn 'demo_flask.onloop_app:create_asgi_app()' -k uvicorn_worker.UvicornWorker
    granian --interface asgi --factory demo_flask.onloop_app:create_asgi_app

(``python -m demo_flask --mode bridge-loop [--server gunicorn|granian]`` runs
them.) At lifespan shutdown open ``/track`` streams are told to end, then the
bridge drains its calls and closes its HTTP and Redis pools on the loop. A
stop signal (SIGTERM, Ctrl-C) asks the streams to end at once, before the
server waits for its connections, when the server handles that signal in
Python (uvicorn, gunicorn's uvicorn workers).

Example::

    app = create_asgi_app()  # CAAS_MODE=bridge-loop, REDIS_URL, UPSTREAM_URL from the environment
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from flask import Flask

from aiobridge import AioThread
from aiobridge.onloop import OnLoop

from . import begin_shutdown, create_app
from .bridge_mode import BridgeLoopMode
from .views import EXTENSION_KEY

__all__ = ("DemoOnLoop", "create_asgi_app")

#: The mode this module serves.
MODE = "bridge-loop"


def _end_streams_then(app: Flask, previous: Callable[[int, FrameType | None], Any],
                      signum: int, frame: FrameType | None) -> None:  # fmt: skip
    begin_shutdown(app)
    previous(signum, frame)


class DemoOnLoop(OnLoop):
    """:class:`~aiobridge.onloop.OnLoop` that also ends the demo's streams at a stop."""

    def __init__(self, app: Flask, *, threads: int) -> None:
        super().__init__(app, bridge=None, threads=threads,
                         stop_timeout=float(app.config["AIOBRIDGE_STOP_TIMEOUT"]))  # fmt: skip
        self.flask_app = app
        self._signals_chained = False

    def adopt(self) -> AioThread:
        bridge = super().adopt()
        self._end_streams_on_stop_signals()
        return bridge

    async def astop(self) -> None:
        begin_shutdown(self.flask_app)
        await super().astop()

    def _end_streams_on_stop_signals(self) -> None:
        """Chain the server's Python SIGTERM/SIGINT handlers (once, main thread only)."""
        if self._signals_chained or threading.current_thread() is not threading.main_thread():
            return
        self._signals_chained = True
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if callable(previous):
                signal.signal(signum, functools.partial(_end_streams_then, self.flask_app,
                                                        previous))  # fmt: skip


def create_asgi_app(threads: int = 8) -> DemoOnLoop:
    """The demo (``CAAS_MODE`` must be ``bridge-loop``) as an ASGI app on the server's loop.

    Args:
        threads: the pool of views sent to threads (the demo has none; see
            :func:`aiobridge.onloop.on_loop`).

    Raises:
        ValueError: another mode is configured (a blocking mode would stall the loop).
    """
    app = create_app()
    mode = app.extensions[EXTENSION_KEY]
    if not isinstance(mode, BridgeLoopMode):
        raise ValueError(f"demo_flask.onloop_app serves CAAS_MODE={MODE}, got {mode.name}")
    mode.served_on_loop = True
    return DemoOnLoop(app, threads=threads)
