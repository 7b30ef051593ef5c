"""The demo app served by gunicorn, uvicorn or granian, as a child process.

:class:`AppServer` runs whichever server its ``server`` argument names (by
default uvicorn for the ``quart`` mode, else gunicorn);
:class:`GunicornServer`, :class:`UvicornServer` and :class:`GranianServer`
are the same with their server fixed. ``python -m demo_flask``, the tests and
the benchmarks all start the app through these classes.

Example::

    with AppServer("bridge", redis_url=redis.url, upstream_url=upstream.url) as app:
        requests.get(f"{app.url}/dog")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from typing import Any

from .ports import HOST
from .process import ChildService, answers_health, env_with_repo
from .server_commands import GRANIAN_FACTORY, default_server, server_command

__all__ = ("AppServer", "GranianServer", "GunicornServer", "UvicornServer")


class AppServer(ChildService):
    """The demo served by gunicorn (``demo_flask/gunicorn.conf.py``), uvicorn or granian.

    Args:
        mode: the demo's mode (``CAAS_MODE``; ``quart`` is the Quart rewrite).
        redis_url: the Redis the app uses.
        upstream_url: the upstream dog service the app calls.
        workers: worker processes.
        threads: threads per worker.
        graceful_timeout: seconds the server gives in-flight requests at SIGTERM.
        preload: load the app in the master before forking the workers.
        dev_mode: run under ``python -X dev`` (warnings and asyncio checks on).
        app_config: passed to ``create_app`` (else the app reads the environment).
        port: a port on 127.0.0.1 (default: a free one).
        startup_timeout: seconds to wait for ``/health``.
        server: ``gunicorn``, ``uvicorn`` or ``granian`` (default: uvicorn for
            ``quart``, else gunicorn); see
            :func:`~demo_flask.services.server_commands.server_command`.
        worker_class: gunicorn's worker class (default: gevent for the
            ``gevent`` mode, else gthread).
        env: more environment variables for the app (``AIOBRIDGE_UVLOOP``...).
        capture_output: keep the server's output for :meth:`output` (default);
            False lets it through to this process's stdout and stderr.
        own_metrics_dir: unless the environment names a
            ``PROMETHEUS_MULTIPROC_DIR``, give the workers a new one, removed at
            stop even after a SIGKILL (default); False leaves it to the server
            (``gunicorn.conf.py`` then makes and removes its own).

    ``stop()`` is graceful: SIGTERM to the master, a wait of
    ``graceful_timeout`` plus a margin, then SIGKILL to the whole process group
    (what overstayed, and any worker the master left behind).
    """

    #: The server every instance of the class runs; None: chosen by ``server=``.
    fixed_server: str | None = None
    #: The ``module:function`` granian serves when the server is granian.
    granian_factory = GRANIAN_FACTORY

    def __init__(
        self,
        mode: str = "bridge",
        *,
        redis_url: str,
        upstream_url: str,
        workers: int = 1,
        threads: int = 16,
        graceful_timeout: int = 5,
        preload: bool = False,
        dev_mode: bool = False,
        app_config: dict[str, Any] | None = None,
        port: int | None = None,
        startup_timeout: float = 60.0,
        server: str | None = None,
        worker_class: str | None = None,
        env: dict[str, str] | None = None,
        capture_output: bool = True,
        own_metrics_dir: bool = True,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout,
                         capture_output=capture_output)  # fmt: skip
        if self.fixed_server is not None and server not in (None, self.fixed_server):
            raise ValueError(f"{type(self).__name__} runs {self.fixed_server}, not {server}")
        self.mode = mode
        self.redis_url = redis_url
        self.upstream_url = upstream_url
        self.workers = workers
        self.threads = threads
        self.graceful_timeout = graceful_timeout
        self.preload = preload
        self.dev_mode = dev_mode
        self.app_config = app_config
        self.server = server or self.fixed_server or default_server(mode)
        self.worker_class = worker_class
        self.extra_env = dict(env or {})
        self.own_metrics_dir = own_metrics_dir
        self.name = self.server
        self._metrics_dir: str | None = None

    @property
    def url(self) -> str:
        """The app's base URL."""
        return f"http://{HOST}:{self.port}"

    @property
    def returncode(self) -> int | None:
        """The master's exit code once it has exited."""
        return None if self._proc is None else self._proc.poll()

    def _command(self) -> list[str]:
        return server_command(
            self.server, mode=self.mode, port=self.port, workers=self.workers,
            threads=self.threads, graceful_timeout=self.graceful_timeout,
            worker_class=self.worker_class, preload=self.preload, dev_mode=self.dev_mode,
            app_config=self.app_config, granian_factory=self.granian_factory,
        )  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = env_with_repo(CAAS_MODE=self.mode, REDIS_URL=self.redis_url,
                            UPSTREAM_URL=self.upstream_url, **self.extra_env)  # fmt: skip
        if self.own_metrics_dir and "PROMETHEUS_MULTIPROC_DIR" not in env:
            # The workers' metrics files; removed at stop, even after a SIGKILL.
            self._metrics_dir = tempfile.mkdtemp(prefix="caas-metrics-")
            env["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir
        return env

    def _close_log(self) -> None:
        super()._close_log()
        metrics_dir, self._metrics_dir = self._metrics_dir, None
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _ready(self) -> bool:
        return answers_health(self.url, timeout=1.0)

    def wait(self) -> int:
        """Block until the server exits by itself or is stopped; its exit code.

        Unbounded on purpose: ``python -m demo_flask`` serves until Ctrl-C.
        """
        assert self._proc is not None, "start() first"
        return self._proc.wait()

    def terminate(self, timeout: float | None = None) -> bool:
        """SIGTERM the master and wait for it to exit; False if it overstayed.

        ``timeout`` defaults to ``graceful_timeout`` plus 10 s. The process is
        left running when it overstays; ``stop()`` then kills it.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return True
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(self.graceful_timeout + 10 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop, then SIGKILL to the whole group. Idempotent."""
        proc = self._proc
        if proc is not None:
            self.terminate(timeout)
            # What overstayed, and any worker the master left behind, goes with the group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self._close_log()


class GunicornServer(AppServer):
    """The demo on gunicorn with ``demo_flask/gunicorn.conf.py``; see :class:`AppServer`."""

    fixed_server = "gunicorn"


class UvicornServer(AppServer):
    """The demo on uvicorn (one process; Quart, or Flask through a2wsgi); see :class:`AppServer`."""

    fixed_server = "uvicorn"


class GranianServer(AppServer):
    """The demo on granian's WSGI interface; see :class:`AppServer`."""

    fixed_server = "granian"
