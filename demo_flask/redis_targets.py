"""A synchronous redis-py client for any Redis URL the demo takes.

``REDIS_URL`` may name one server (``redis://``), the master of a
Sentinel-watched service (``redis+sentinel://HOST:PORT,.../SERVICE[/DB]``) or
a Redis Cluster (``redis+cluster://HOST:PORT,...``), as
:func:`aiobridge.clients.parse_redis_url` reads them. The app's own clients
come from :func:`aiobridge.clients.redis_client`; this is for the seeding of
the names, the tests and the drills, which are synchronous.

Example::

    with closing(sync_client(url)) as client:
        client.hset(DOG_NAMES_KEY, mapping=DOGS)
"""

from __future__ import annotations

from typing import Any

from aiobridge.clients import parse_redis_url

__all__ = ("sync_client",)


def sync_client(url: str, **kw: Any) -> Any:
    """``redis.Redis``, a Sentinel master's client or ``redis.cluster.RedisCluster``.

    Close it with ``close()`` (a Sentinel client's sentinels are closed too).
    """
    import redis
    from redis.cluster import ClusterNode, RedisCluster
    from redis.sentinel import Sentinel

    target = parse_redis_url(url)
    if target.kind == "cluster":
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes], **kw)
    if target.kind == "sentinel":
        assert target.service is not None
        sentinel = Sentinel(list(target.nodes), sentinel_kwargs={"socket_timeout": 1.0},
                            db=target.db, **kw)  # fmt: skip
        master = sentinel.master_for(target.service)
        closing = master.close

        def close() -> None:
            closing()
            for client in sentinel.sentinels:
                client.close()

        master.close = close  # type: ignore[method-assign]
        return master
    return redis.Redis.from_url(url, **kw)
