"""Launchers for the demo and the services it needs: Redis, the upstream, the app server.

Used by ``python -m demo_flask``, by the test suite and by the benchmarks, so
every one of them starts the same way: on ``127.0.0.1`` only, on a free port,
with a bounded wait until the service answers and a bounded stop.

- :mod:`.ports`: :data:`HOST`, :func:`free_port`, :func:`port_is_free`,
  :func:`wait_for_port`;
- :mod:`.process`: :class:`ChildService`, the bounded start/readiness/stop
  every service below shares, and :class:`ServiceError`;
- :mod:`.redis_server`: :class:`RedisServer`, :class:`ExternalRedis`,
  :func:`redis_from_env`, :func:`find_redis_server`;
- :mod:`.upstream_server`: :class:`UpstreamServer`, the dog service;
- :mod:`.server_commands`: the gunicorn, uvicorn and granian command lines;
- :mod:`.app_servers`: :class:`AppServer` (any server) and
  :class:`GunicornServer`, :class:`UvicornServer`, :class:`GranianServer`.

Example::

    with RedisServer() as redis, UpstreamServer(seed_redis=redis.url) as upstream:
        print(redis.url, upstream.url)
"""

from __future__ import annotations

from .app_servers import AppServer, GranianServer, GunicornServer, UvicornServer
from .ports import HOST, free_port, port_is_free, wait_for_port
from .process import ChildService, ServiceError
from .redis_server import (
    ExternalRedis,
    RedisNotFoundError,
    RedisServer,
    find_redis_server,
    redis_from_env,
)
from .server_commands import (
    GRANIAN_FACTORY,
    SERVERS,
    default_server,
    default_worker_class,
    server_command,
)
from .upstream_server import UpstreamServer

__all__ = (
    "GRANIAN_FACTORY",
    "HOST",
    "SERVERS",
    "AppServer",
    "ChildService",
    "ExternalRedis",
    "GranianServer",
    "GunicornServer",
    "RedisNotFoundError",
    "RedisServer",
    "ServiceError",
    "UpstreamServer",
    "UvicornServer",
    "default_server",
    "default_worker_class",
    "find_redis_server",
    "free_port",
    "port_is_free",
    "redis_from_env",
    "server_command",
    "wait_for_port",
)
