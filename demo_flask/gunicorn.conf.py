"""gunicorn settings for the demo (``gunicorn -c demo_flask/gunicorn.conf.py``).

``python -m demo_flask`` passes bind, workers, threads and ``--preload`` on
the command line; the values here are the defaults for a direct gunicorn run.

One event loop per *worker*: the app (and its bridge object) may be created
in the master when ``--preload`` is on, but no loop thread ever starts there.
Each worker starts its own bridge after the fork (``post_worker_init``) and
stops it, closing its HTTP and Redis pools, before it exits
(``worker_exit``).

Metrics: ``/metrics`` (bridge mode) sums every worker's figures through
prometheus_client's multiprocess mode. Its directory is
``PROMETHEUS_MULTIPROC_DIR`` if set (emptied of old figures at start; the
launcher in :mod:`demo_flask.services` gives each server its own), else a
fresh temporary one removed at exit; a worker that dies is marked dead
(``child_exit``) so its gauges stop counting.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import tempfile
from typing import Any

# gunicorn sets raw_env in the master before it loads the app (even with
# --preload), so prometheus_client starts in multiprocess mode and every worker
# writes to the same directory. Reading this file changes nothing (tests read
# it); the marker says the directory is ours, even when a HUP reads it again.
_OWN_DIR_MARKER = "CAAS_OWN_METRICS_DIR"
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _metrics_dir is None or os.environ.get(_OWN_DIR_MARKER) == _metrics_dir:
    _metrics_dir = _metrics_dir or os.path.join(
        tempfile.gettempdir(), f"caas-metrics-{os.getpid()}"
    )
    raw_env = [f"PROMETHEUS_MULTIPROC_DIR={_metrics_dir}", f"{_OWN_DIR_MARKER}={_metrics_dir}"]

wsgi_app = "demo_flask:create_app()"
bind = ["127.0.0.1:8000"]  # loopback only
worker_class = "gthread"  # threads hand their coroutines to the worker's bridge
workers = 2
threads = 16
# SIGTERM: stop accepting, let in-flight requests finish for this long, then
# worker_exit runs. Open SSE streams are told to end at once (see below).
graceful_timeout = 10
timeout = 60
keepalive = 5
# The app answers a URL longer than params.MAX_URL_LENGTH with a JSON 414; only a
# request line past this (gunicorn's maximum) gets gunicorn's own plain 400.
limit_request_line = 8190
accesslog = None
errorlog = "-"
loglevel = "info"
capture_output = False
# No control socket: several demo or benchmark servers may run side by side.
control_socket_disable = True


def post_worker_init(worker: Any) -> None:
    """In the worker, after the fork: start its bridge now rather than on the first request.

    Doing it here (never at import, never in ``on_starting``/``when_ready``,
    which run in the master) keeps the master loop-free even with ``--preload``.
    """
    from flask import Flask

    from aiobridge.flask import startup
    from demo_flask import begin_shutdown

    app = worker.wsgi
    if not isinstance(app, Flask):  # bridge-loop's ASGI app: its lifespan does all this
        return
    startup(app)

    # An SSE stream would otherwise hold its connection, and so the worker,
    # until graceful_timeout, after which the master kills the worker before
    # worker_exit can close anything. On SIGTERM, ask the streams to end first.
    gunicorn_handler = signal.getsignal(signal.SIGTERM)

    def end_streams_then_exit(signum: int, frame: Any) -> None:
        begin_shutdown(app)
        if callable(gunicorn_handler):
            gunicorn_handler(signum, frame)

    signal.signal(signal.SIGTERM, end_streams_then_exit)


def worker_exit(server: Any, worker: Any) -> None:
    """In the worker, as it exits: release the mode's clients and stop the bridge.

    In bridge mode this drains in-flight calls (``AIOBRIDGE_STOP_TIMEOUT``),
    closes the shared ``aiohttp`` session and Redis pool on the loop, then
    joins the loop thread, so no "Unclosed client session" is ever logged.
    """
    from flask import Flask

    app = getattr(worker, "wsgi", None)
    if isinstance(app, Flask):  # bridge-loop's ASGI app stops its bridge at lifespan shutdown
        from demo_flask import shutdown

        shutdown(app)


def on_starting(server: Any) -> None:
    """In the master, once, before any worker: an empty metrics directory.

    Figures left by an earlier run are stale.
    """
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(path, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):
        os.remove(stale)


def child_exit(server: Any, worker: Any) -> None:
    """In the master, after a worker died (however it died): drop its live gauges."""
    from aiobridge.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """In the master, at the very end: remove the metrics directory if it made it."""
    own = os.environ.get(_OWN_DIR_MARKER)
    if own and own == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(own, ignore_errors=True)
