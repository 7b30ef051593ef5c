"""Factories for the usual loop-bound clients, to pass to ``bridge.resource()``.

Each helper returns an async factory; :meth:`aiobridge.AioThread.resource`
calls it once on the bridge's loop and closes the client when the bridge
stops. aiohttp and redis are optional: each helper imports its library in the
calling thread when it makes the factory, not on the loop when the factory
runs (importing aiohttp loads the CA bundle: ~0.2 s that would stall every
caller of the bridge and be logged as a blocked loop), so
``import aiobridge.clients`` works without them.

Example:
    >>> from aiobridge import AioThread
    >>> from aiobridge.clients import http_session, redis_client
    >>> bridge = AioThread().start()
    >>> http = bridge.resource(http_session())
    >>> cache = bridge.resource(redis_client(redis_url))
    >>> async def page(url: str) -> str:
    ...     redis = await cache.get()
    ...     if (hit := await redis.get(url)) is not None:
    ...         return hit.decode()
    ...     session = await http.get()
    ...     async with session.get(url) as response:
    ...         text = await response.text()
    ...     await redis.set(url, text, ex=60)
    ...     return text
    >>> bridge.run(page(f"{upstream_url}/health"))
    'ok'
    >>> bridge.stop()
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NamedTuple, cast
from urllib.parse import unquote

if TYPE_CHECKING:
    import aiohttp
    import redis.asyncio

__all__ = ("RedisTarget", "http_session", "parse_redis_url", "redis_client")

#: Default timeouts of :func:`http_session` (seconds). The total is inside the
#: Flask extension's default request deadline (``AIOBRIDGE_TIMEOUT``, 30 s), so a
#: slow upstream raises ``TimeoutError`` in the view, which can answer
#: for it, before the request itself ends in a 504: innermost timeout first.
HTTP_TOTAL_TIMEOUT = 20.0
HTTP_CONNECT_TIMEOUT = 10.0
#: Default bound of :func:`redis_client`'s pool: one connection per request
#: thread of a 32-thread worker, so one command per thread never waits, while a
#: burst (``gather`` over many keys) queues instead of opening a connection per
#: command on a Redis shared by every worker.
REDIS_MAX_CONNECTIONS = 32


def _missing(package: str, extra: str) -> ImportError:
    return ImportError(
        f"{package} is not installed; install it with: pip install {package} "
        f"(or aiobridge's {extra!r} extra: pip install -e '.[{extra}]' in a clone)"
    )


def http_session(
    *,
    limit: int = 100,
    limit_per_host: int = 0,
    keepalive_timeout: float = 15.0,
    timeout: aiohttp.ClientTimeout | None = None,
    **session_kw: Any,
) -> Callable[[], Coroutine[Any, Any, aiohttp.ClientSession]]:
    """A factory of ``aiohttp.ClientSession``\\ s with a bounded, keep-alive pool.

    Args:
        limit: connections open at once across all hosts (0: no limit).
        limit_per_host: connections open at once to one host (0: no limit).
        keepalive_timeout: seconds an idle connection stays in the pool.
        timeout: an ``aiohttp.ClientTimeout``; default: 20 s per request, of
            which at most 10 s to connect (:data:`HTTP_TOTAL_TIMEOUT`, inside
            the Flask extension's 30 s request deadline). If you lower
            ``AIOBRIDGE_TIMEOUT``, pass a total below it. Pass
            ``aiohttp.ClientTimeout(total=30, connect=10)`` for the 0.1
            development default.
        **session_kw: passed to ``aiohttp.ClientSession`` (``headers``,
            ``raise_for_status``, ``base_url``...).

    Returns:
        An async function making the session on the running loop; the
        session's ``close()`` closes the pool.

    Raises:
        ImportError: aiohttp is not installed (it is imported here, not on the loop).

    Example:
        >>> http = bridge.resource(http_session(limit_per_host=20))
    """
    if "connector" in session_kw:
        raise TypeError(
            "http_session() makes its own connector; pass limit, limit_per_host and "
            "keepalive_timeout instead, or write a factory of your own"
        )

    try:
        import aiohttp  # here, in the caller's thread: see the module docstring
    except ImportError as exc:
        raise _missing("aiohttp", "http") from exc

    async def make_http_session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=limit, limit_per_host=limit_per_host, keepalive_timeout=keepalive_timeout
        )
        client_timeout = timeout or aiohttp.ClientTimeout(
            total=HTTP_TOTAL_TIMEOUT, connect=HTTP_CONNECT_TIMEOUT
        )
        return aiohttp.ClientSession(connector=connector, timeout=client_timeout, **session_kw)

    return make_http_session


def _keepalive_options() -> dict[int, int]:
    """Find a vanished Redis peer in about 45 s: 30 s idle, then 3 probes 5 s apart."""
    wanted = {"TCP_KEEPIDLE": 30, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}
    return {getattr(socket, name): value for name, value in wanted.items()
            if hasattr(socket, name)}


#: The URL schemes of a Redis behind Sentinel and of a Redis Cluster.
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"


class RedisTarget(NamedTuple):
    """What a Redis URL names: one server, a Sentinel-watched service or a Cluster.

    ``kind`` is ``"standalone"``, ``"sentinel"`` or ``"cluster"``; ``nodes``
    the ``(host, port)`` of the sentinels or of the cluster's seed nodes
    (empty for a standalone URL, which redis-py parses itself); ``service``
    the Sentinel service name; ``db`` the database (0 for a cluster).
    """

    kind: str
    nodes: tuple[tuple[str, int], ...]
    service: str | None
    db: int


def parse_redis_url(url: str) -> RedisTarget:
    """Read a Redis URL, including the two forms redis-py has no URL for.

    - ``redis://``, ``rediss://``, ``unix://``: one server (redis-py's own URLs);
    - ``redis+sentinel://HOST:PORT,HOST:PORT,.../SERVICE[/DB]``: the master of
      ``SERVICE`` as the listed sentinels report it;
    - ``redis+cluster://HOST:PORT,HOST:PORT,...``: a Redis Cluster, from these
      seed nodes (any one that answers is enough).

    Raises:
        ValueError: a malformed URL; the message says what is wrong.

    Example:
        >>> parse_redis_url("redis+sentinel://10.0.0.5:26379,10.0.0.6:26379/caas/0")
        RedisTarget(kind='sentinel', nodes=(('10.0.0.5', 26379), ('10.0.0.6', 26379)), service='caas', db=0)
    """  # noqa: E501
    if not isinstance(url, str) or not url:
        raise TypeError(f"a Redis URL must be a non-empty string, got {url!r}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in (SENTINEL_SCHEME, CLUSTER_SCHEME):
        return RedisTarget("standalone", (), None, 0)
    # Split by hand: urllib's urlsplit refuses a list of hosts with a bracketed
    # IPv6 one after the first ("Invalid IPv6 URL", in newer patch releases).
    netloc, _, rest = rest.partition("/")
    if "@" in netloc or "?" in netloc or "?" in rest or "#" in netloc or "#" in rest:
        raise ValueError(f"{url!r}: pass credentials and options as keyword arguments")
    nodes = tuple(_address(url, item) for item in netloc.split(","))
    path = [unquote(p) for p in rest.split("/") if p]
    if scheme.lower() == CLUSTER_SCHEME:
        if path:
            raise ValueError(f"{url!r}: a cluster URL has no path (a cluster has only db 0)")
        return RedisTarget("cluster", nodes, None, 0)
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"{url!r}: expected {SENTINEL_SCHEME}://HOST:PORT,.../SERVICE[/DB]")
    return RedisTarget("sentinel", nodes, path[0], int(path[1]) if len(path) == 2 else 0)


def _address(url: str, item: str) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{url!r}: {item!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def redis_client(
    url: str,
    *,
    max_connections: int | None = REDIS_MAX_CONNECTIONS,
    pool_timeout: float | None = 5.0,
    **client_kw: Any,
) -> Callable[[], Coroutine[Any, Any, redis.asyncio.Redis]]:
    """A factory of ``redis.asyncio`` clients (one connection pool each).

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL for one server;
            ``redis+sentinel://HOST:PORT,.../SERVICE[/DB]`` for the master of
            a Sentinel-watched service (a ``redis.asyncio.sentinel`` client);
            ``redis+cluster://HOST:PORT,...`` for a Redis Cluster (a
            ``redis.asyncio.cluster.RedisCluster``); see :func:`parse_redis_url`.
        max_connections: bound the pool at this many connections. Commands
            beyond it wait for a free connection (up to ``pool_timeout``
            seconds, then ``redis.exceptions.ConnectionError``) instead of
            failing at once. Redis answers in well under a millisecond, so a
            few connections serve a whole worker. Default: 32
            (:data:`REDIS_MAX_CONNECTIONS`); ``None`` opens one connection
            per concurrent command, without bound. For a cluster the bound
            is per node, and a command beyond it fails at once
            (``MaxConnectionsError``: redis-py's cluster pool does not wait).
            Keep pub/sub on a client of its own: a subscription holds its
            connection for as long as it lasts.
        pool_timeout: seconds a command waits for a connection of a bounded
            pool (``None``: wait as long as it takes).
        **client_kw: connection options (``decode_responses``...). Defaults:
            5 s to connect, no ``socket_timeout``, TCP keepalive on, a health
            check of idle connections every 30 s (see below).

    Failover:
        Behind Sentinel, each new connection asks the sentinels for the
        current master; a connection to a master that was demoted is closed
        on its first ``READONLY`` or ``NOREPLICAS`` answer, including one
        raised inside a Lua script (which redis-py alone reports as a plain
        ``ResponseError`` and keeps the connection: the client would write to
        the demoted master until restarted); it raises ``ConnectionError``.
        The sentinels themselves are queried with a 1 s ``socket_timeout``
        (a query is an idempotent read) unless
        ``sentinel_kwargs`` says otherwise. In a Cluster, redis-py refreshes
        the slot map after a connection error and follows ``MOVED``.

    Cancellation:
        A command cancelled by the bridge (a timeout, ``Future.cancel()``,
        Ctrl-C, ``stop()``) must really stop, so no later command of the same
        coroutine runs. redis-py (8.x) gives connections a default
        ``socket_timeout`` of 5 s, and with any ``socket_timeout`` it sends each
        command through ``asyncio.wait_for``, which on Python 3.11 drops a
        cancellation that lands as the write finishes (CPython gh-86296; fixed
        in 3.12). So this helper sets ``socket_timeout=None``: writes and reads
        are plain awaits, cancelled cleanly on every Python. The bound on a
        stuck or dead connection comes from elsewhere: the bridge's timeouts
        (``run(timeout=)``, ``default_timeout``) cancel a command that waits too
        long, TCP keepalive (30 s idle, then 3 probes 5 s apart, where the
        platform allows) closes a connection whose peer vanished, and
        ``health_check_interval`` pings a connection idle for longer before
        reusing it. Passing ``socket_timeout`` yourself brings the 3.11
        problem back; aiobridge then cancels again the calls that went on
        (``stats().cancel_redelivered``) and counts those it could not stop
        (``stats().cancel_ignored``); see ``docs/cancellation.md``.

    Returns:
        An async function making the client on the running loop; it is closed
        with ``aclose()``, which also closes its pool (and, behind Sentinel,
        the connections to the sentinels).

    Raises:
        ImportError: redis is not installed (it is imported here, not on the loop).
        ValueError: a malformed Sentinel or Cluster URL.

    Example:
        >>> cache = bridge.resource(redis_client(redis_url, decode_responses=True))
    """
    target = parse_redis_url(url)
    if max_connections is not None and (
        not isinstance(max_connections, int) or max_connections < 1
    ):
        raise ValueError(f"max_connections must be an int >= 1 or None, got {max_connections!r}")
    client_kw.setdefault("socket_connect_timeout", 5.0)
    client_kw.setdefault("health_check_interval", 30)
    # Not asyncio.wait_for on every write (see "Cancellation" above).
    client_kw.setdefault("socket_timeout", None)
    if not url.startswith("unix://"):  # unix sockets take no keepalive
        client_kw.setdefault("socket_keepalive", True)
        client_kw.setdefault("socket_keepalive_options", _keepalive_options())

    try:
        import redis.asyncio  # here, in the caller's thread: see the module docstring
    except ImportError as exc:
        raise _missing("redis", "redis") from exc

    if target.kind == "sentinel":
        return _sentinel_factory(target, max_connections, pool_timeout, client_kw)
    if target.kind == "cluster":
        return _cluster_factory(target, max_connections, client_kw)

    async def make_redis_client() -> redis.asyncio.Redis:
        if max_connections is None:
            client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(url, **client_kw)
            return client
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout, **client_kw
        )
        return redis.asyncio.Redis.from_pool(pool)  # the client owns and closes the pool

    return make_redis_client


#: A master's answers that mean "no longer the master to write to": demoted
#: (READONLY), or cut off from its replicas (NOREPLICAS, with min-replicas-to-write).
_DEMOTED = re.compile(r"\b(READONLY|NOREPLICAS)\b")

#: How long a query to one sentinel may take before the next sentinel is asked.
SENTINEL_QUERY_TIMEOUT = 1.0


def _sentinel_factory(
    target: RedisTarget, max_connections: int | None, pool_timeout: float | None,
    client_kw: dict[str, Any],
) -> Callable[[], Coroutine[Any, Any, redis.asyncio.Redis]]:  # fmt: skip
    import redis.asyncio
    from redis.asyncio.connection import BlockingConnectionPool
    from redis.asyncio.sentinel import (
        Sentinel,
        SentinelConnectionPool,
        SentinelManagedConnection,
    )
    from redis.exceptions import ConnectionError, ResponseError

    class FailoverAwareConnection(SentinelManagedConnection):
        """READONLY or NOREPLICAS, even inside a Lua script, reconnects through Sentinel.

        redis-py turns a bare ``READONLY`` answer into "reconnect through
        Sentinel", but an ``EVAL`` whose write hits a demoted master answers
        ``ERR Error running script ... -READONLY ...``: a plain
        ``ResponseError`` that would leave the connection on the old master.
        A master with ``min-replicas-to-write`` that lost its replicas (they
        follow a new master) answers ``NOREPLICAS``: the same case.
        """

        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().read_response(*args, **kwargs)
            except ResponseError as exc:
                if self.connection_pool.is_master and _DEMOTED.search(str(exc)):
                    await self.disconnect()
                    raise ConnectionError("the master was demoted (READONLY)") from exc
                raise

    class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
        """Sentinel's master discovery with a bounded pool that waits for a connection."""

    class SentinelMaster(redis.asyncio.Redis):
        """The master's client; closing it closes the connections to the sentinels too."""

        sentinel_manager: Sentinel | None = None

        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            await super().aclose(close_connection_pool)
            for client in self.sentinel_manager.sentinels if self.sentinel_manager else ():
                await client.aclose()

    sentinel_kw = dict(client_kw.pop("sentinel_kwargs", None) or {})
    sentinel_kw.setdefault("socket_timeout", SENTINEL_QUERY_TIMEOUT)
    sentinel_kw.setdefault("socket_connect_timeout", client_kw["socket_connect_timeout"])
    pool_kw: dict[str, Any] = {"connection_class": FailoverAwareConnection}
    if max_connections is not None:
        pool_kw.update(max_connections=max_connections, timeout=pool_timeout)
    pool_class = SentinelConnectionPool if max_connections is None else BlockingSentinelPool
    client_kw.setdefault("db", target.db)

    async def make_sentinel_master() -> redis.asyncio.Redis:
        assert target.service is not None
        sentinel = Sentinel(list(target.nodes), sentinel_kwargs=sentinel_kw, **client_kw)
        master: SentinelMaster = sentinel.master_for(
            target.service, redis_class=SentinelMaster, connection_pool_class=pool_class,
            **pool_kw,
        )  # fmt: skip
        master.sentinel_manager = sentinel
        return master

    return make_sentinel_master


def _cluster_factory(
    target: RedisTarget, max_connections: int | None, client_kw: dict[str, Any],
) -> Callable[[], Coroutine[Any, Any, redis.asyncio.Redis]]:  # fmt: skip
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    options = dict(client_kw)
    options.pop("db", None)
    if max_connections is not None:
        options["max_connections"] = max_connections

    async def make_cluster() -> redis.asyncio.Redis:
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        cluster: Any = RedisCluster(startup_nodes=nodes, **options)
        return cast("redis.asyncio.Redis", cluster)  # same command surface, for the callers

    return make_cluster
