"""``python -m demo_flask.uvicorn_server``: the demo on uvicorn, in one process.

Two apps can be served:

- ``--app quart``: the Quart rewrite (:mod:`demo_flask.quart_app`); its clients
  open and close with uvicorn's lifespan.
- ``--app flask``: the Flask app in the mode ``CAAS_MODE`` (e.g. ``bridge``)
  through the ``a2wsgi`` adapter, whose thread pool (``--threads``) runs the
  WSGI calls; the mode is started before serving and shut down after.
- ``--app onloop``: the ``bridge-loop`` mode, the Flask app on uvicorn's own
  loop (uvloop, httptools), one greenlet per request
  (:mod:`demo_flask.onloop_app`); its bridge adopts the loop at lifespan
  startup and stops at lifespan shutdown.

On SIGTERM or Ctrl-C, open ``/track`` streams are told to end at once (as the
gunicorn config does), in-flight requests get ``--graceful-timeout`` seconds,
then the app's clients are closed. Configuration comes from the environment
(``REDIS_URL``, ``UPSTREAM_URL``, ``CAAS_MODE``…, see :mod:`demo_flask`).
Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from .services import HOST

__all__ = ("main",)


class _Server(uvicorn.Server):
    """uvicorn, telling the app's streams to end as soon as a stop is asked for."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


def _quart() -> tuple[Any, Callable[[], None], Callable[[], None]]:
    from .quart_app import create_quart_app

    app = create_quart_app()
    mode = app.extensions["caas"]
    return app, mode.begin_shutdown, lambda: None


def _flask(threads: int) -> tuple[Any, Callable[[], None], Callable[[], None]]:
    from a2wsgi import WSGIMiddleware

    from aiobridge.flask import startup

    from . import begin_shutdown, create_app, shutdown

    app = create_app()
    startup(app)
    return (WSGIMiddleware(app, workers=threads),  # type: ignore[arg-type]
            lambda: begin_shutdown(app), lambda: shutdown(app))  # fmt: skip


def _onloop(threads: int) -> tuple[Any, Callable[[], None], Callable[[], None]]:
    from . import begin_shutdown
    from .onloop_app import create_asgi_app

    app = create_asgi_app(threads=threads)
    return app, lambda: begin_shutdown(app.flask_app), lambda: None


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m demo_flask.uvicorn_server",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--app", choices=("quart", "flask", "onloop"), default="quart")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=32, help="a2wsgi threads (--app flask)")
    parser.add_argument("--graceful-timeout", type=int, default=10)
    args = parser.parse_args(argv)
    if args.app == "quart":
        app, begin_shutdown, shutdown = _quart()
    else:
        app, begin_shutdown, shutdown = (_flask if args.app == "flask" else _onloop)(args.threads)
    # On uvloop and httptools' C parser, what uvicorn's "auto" gives Quart when installed.
    loop = {"loop": "uvloop", "http": "httptools"} if args.app == "onloop" else {}
    config = uvicorn.Config(
        app, host=HOST, port=args.port, lifespan="off" if args.app == "flask" else "on",
        access_log=False, log_level="info", timeout_graceful_shutdown=args.graceful_timeout,
        **loop,
    )  # fmt: skip
    server = _Server(config, begin_shutdown)
    # uvicorn re-raises the stop signal once it has shut down; it is handled by then.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: None)
    try:
        server.run()
    finally:
        shutdown()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
