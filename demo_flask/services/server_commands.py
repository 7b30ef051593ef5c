"""The command lines that serve the demo on gunicorn, uvicorn or granian.

:func:`server_command` picks the server and refuses a combination that does
not exist (Quart on gunicorn, several uvicorn processes, a preloaded granian);
:func:`gunicorn_command`, :func:`uvicorn_command` and :func:`granian_command`
build each server's line. Used by :class:`~demo_flask.services.AppServer` and,
through it, by ``python -m demo_flask``.
"""

from __future__ import annotations

import sys
from typing import Any

from .ports import HOST
from .process import REPO_ROOT

__all__ = ("ASGI_MODES", "GRANIAN_FACTORY", "ONLOOP_FACTORY", "SERVERS", "UVICORN_WORKER",
           "default_server", "default_worker_class", "granian_command", "gunicorn_command",
           "server_command",
           "uvicorn_command")  # fmt: skip

#: What each kind of server runs: ``python -m demo_flask --server`` and ``AppServer(server=)``.
SERVERS = ("gunicorn", "uvicorn", "granian")

#: The app factory granian serves (see :mod:`demo_flask.granian_app`).
GRANIAN_FACTORY = "demo_flask.granian_app:create_app"
#: The ASGI app factory of the ``bridge-loop`` mode (see :mod:`demo_flask.onloop_app`).
ONLOOP_FACTORY = "demo_flask.onloop_app:create_asgi_app"
#: The modes served as ASGI apps: the Quart rewrite, and the Flask app on the server's loop.
ASGI_MODES = ("quart", "bridge-loop")
#: gunicorn's worker class of the ``bridge-loop`` mode (``uvicorn``: uvicorn-worker's).
UVICORN_WORKER = "uvicorn_worker.UvicornWorker"


def default_server(mode: str) -> str:
    """The server a mode runs on unless told otherwise: uvicorn for ASGI modes, else gunicorn."""
    return "uvicorn" if mode in ASGI_MODES else "gunicorn"


def default_worker_class(mode: str) -> str:
    """gunicorn's worker class for a mode: gevent for ``gevent``, uvicorn's for
    ``bridge-loop``, else gthread."""
    return {"gevent": "gevent", "bridge-loop": "uvicorn"}.get(mode, "gthread")


def _python(dev_mode: bool) -> list[str]:
    return [sys.executable, *(["-X", "dev"] if dev_mode else [])]


def gunicorn_command(
    *, mode: str, port: int, workers: int, threads: int, graceful_timeout: int,
    worker_class: str | None = None, preload: bool = False, dev_mode: bool = False,
    app_config: dict[str, Any] | None = None,
) -> list[str]:  # fmt: skip
    """gunicorn with ``demo_flask/gunicorn.conf.py`` (gthread workers; gevent for ``gevent``;
    uvicorn's, serving :data:`ONLOOP_FACTORY`, for ``bridge-loop``)."""
    worker_class = worker_class or default_worker_class(mode)
    onloop = mode == "bridge-loop"
    if onloop != (worker_class == "uvicorn"):
        raise ValueError(f"mode {mode!r} cannot run on gunicorn's {worker_class} workers: "
                         "bridge-loop is an ASGI app, served by uvicorn workers only")
    if onloop and app_config:
        raise ValueError("bridge-loop reads its configuration from the environment")
    return [
        *_python(dev_mode), "-m", "gunicorn",
        "--config", str(REPO_ROOT / "demo_flask" / "gunicorn.conf.py"),
        "--bind", f"{HOST}:{port}",
        "--workers", str(workers),
        "--threads", str(threads),
        "--worker-class", UVICORN_WORKER if onloop else worker_class,
        "--graceful-timeout", str(graceful_timeout),
        *(["--preload"] if preload else []),
        *([f"{ONLOOP_FACTORY}(threads={threads})"] if onloop else []),
        *([f"demo_flask:create_app({app_config!r})"] if app_config else []),
    ]  # fmt: skip


def uvicorn_command(*, mode: str, port: int, threads: int, graceful_timeout: int,
                    dev_mode: bool = False) -> list[str]:  # fmt: skip
    """:mod:`demo_flask.uvicorn_server`: the Quart rewrite, the Flask app on uvicorn's loop
    (``bridge-loop``: uvloop, httptools), or a Flask mode through a2wsgi."""
    app = {"quart": "quart", "bridge-loop": "onloop"}.get(mode, "flask")
    return [*_python(dev_mode), "-m", "demo_flask.uvicorn_server", "--app", app,
            "--port", str(port), "--threads", str(threads),
            "--graceful-timeout", str(graceful_timeout)]  # fmt: skip


def granian_command(
    *, port: int, workers: int, threads: int, graceful_timeout: int, dev_mode: bool = False,
    factory: str = GRANIAN_FACTORY, asgi: bool = False,
) -> list[str]:  # fmt: skip
    """granian's WSGI interface: ``threads`` blocking threads a worker, the app from ``factory``;
    with ``asgi``, its ASGI interface on uvloop (the ``bridge-loop`` mode)."""
    interface = ["--interface", "asgi", "--loop", "uvloop"] if asgi else [
        "--interface", "wsgi", "--blocking-threads", str(threads)]  # fmt: skip
    return [*_python(dev_mode), "-m", "granian", *interface, "--host", HOST,
            "--port", str(port), "--workers", str(workers), "--no-ws", "--log-level", "warning",
            "--workers-kill-timeout", str(graceful_timeout),
            "--factory", factory]  # fmt: skip


def server_command(
    server: str, *, mode: str, port: int, workers: int, threads: int, graceful_timeout: int,
    worker_class: str | None = None, preload: bool = False, dev_mode: bool = False,
    app_config: dict[str, Any] | None = None, granian_factory: str = GRANIAN_FACTORY,
) -> list[str]:  # fmt: skip
    """The command line serving the demo in ``mode`` on 127.0.0.1:``port``.

    ``gunicorn`` uses ``demo_flask/gunicorn.conf.py`` (``worker_class``:
    gthread by default, gevent for the ``gevent`` mode); ``uvicorn`` runs
    :mod:`demo_flask.uvicorn_server` (the Quart rewrite, or a Flask mode through
    a2wsgi, or ``bridge-loop`` on uvicorn's own loop; one process);
    ``granian`` serves the Flask app on its WSGI interface (``bridge-loop``: its
    ASGI interface), ``threads`` blocking threads per worker, the app made by
    ``granian_factory`` (default :data:`GRANIAN_FACTORY`, which stops the
    bridge when a worker exits).

    Raises:
        ValueError: an unknown server, or a combination that does not exist.
    """
    if server not in SERVERS:
        raise ValueError(f"server must be one of {', '.join(SERVERS)}, got {server!r}")
    if mode == "quart" and server != "uvicorn":
        raise ValueError(f"mode {mode!r} cannot run on {server}: Quart is an ASGI app (uvicorn)")
    if server == "uvicorn":
        if workers != 1 or preload or app_config:
            raise ValueError("uvicorn serves the demo in one process (workers=1, no preload)")
        return uvicorn_command(mode=mode, port=port, threads=threads,
                               graceful_timeout=graceful_timeout, dev_mode=dev_mode)  # fmt: skip
    if server == "granian":
        if preload or app_config:
            raise ValueError("granian builds the app with create_app() in each worker: "
                             "no preload, configuration from the environment")  # fmt: skip
        onloop = mode == "bridge-loop"
        if onloop and granian_factory == GRANIAN_FACTORY:
            granian_factory = ONLOOP_FACTORY
        return granian_command(port=port, workers=workers, threads=threads,
                               graceful_timeout=graceful_timeout, dev_mode=dev_mode,
                               factory=granian_factory, asgi=onloop)  # fmt: skip
    return gunicorn_command(mode=mode, port=port, workers=workers, threads=threads,
                            graceful_timeout=graceful_timeout, worker_class=worker_class,
                            preload=preload, dev_mode=dev_mode, app_config=app_config)  # fmt: skip
