"""The demo's app factory for granian, a WSGI server written in Rust.

Served with ``granian --interface wsgi --factory demo_flask.granian_app:create_app``.
granian runs each worker as a ``multiprocessing`` child, whose exit skips
``atexit`` (the child ends with ``os._exit``); it runs ``multiprocessing``'s
own finalizers instead. This factory registers the demo's shutdown there, so a
worker that stops (SIGTERM to granian) stops its bridge: in-flight calls get
``AIOBRIDGE_STOP_TIMEOUT`` seconds, then the HTTP and Redis pools are closed on
the loop. Do the same in your own factory when you serve a bridge with granian.

Example::

    def create_app():
        app = Flask(__name__)
        AioBridge(app)
        multiprocessing.util.Finalize(app, aiobridge.flask.shutdown, args=(app,),
                                      exitpriority=10)
        return app
"""

from __future__ import annotations

import multiprocessing.util

from flask import Flask

from . import create_app as create_demo_app
from . import shutdown

__all__ = ("create_app",)


def create_app() -> Flask:
    """The demo app (configured from the environment), shut down when the worker exits."""
    app = create_demo_app()
    multiprocessing.util.Finalize(app, shutdown, args=(app,), exitpriority=10)
    return app
