"""Redis Sentinel and Cluster failover under load, with real processes (issue 22).

Each drill (:func:`demo_flask.scaleout.drills.redis_failover_drill`) starts
Redis with failover, the upstream and the demo (bridge mode, 2 gunicorn
workers) with ``REDIS_URL`` set to a ``redis+sentinel://`` or
``redis+cluster://`` URL, loads ``/dog`` (bounded in count and time), makes the
master go away and measures. The promises checked: every failed request is a
JSON 503 (no 500, none left without an answer), every worker writes to the new
master within the bound, billing is exact. The figures are printed (``-s``)
and benchmarked by ``python -m benchmarks.bm_scaleout``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from contextlib import closing

import pytest
import redis.exceptions

from aiobridge import AioThread
from aiobridge.clients import RedisTarget, parse_redis_url, redis_client
from demo_flask import aio_calls, billing, sync_calls
from demo_flask.catalog import BILLING_KEY, DOG_NAMES_KEY
from demo_flask.redis_targets import sync_client
from demo_flask.scaleout.drills import (
    FAILOVER_TIMEOUT,
    KINDS,
    RECOVERY_TIMEOUT,
    redis_failover_drill,
)
from demo_flask.services.redis_ha import ClusterGroup, SentinelGroup

pytestmark = pytest.mark.timeout(240)


def test_parse_redis_url() -> None:
    assert parse_redis_url("redis+sentinel://127.0.0.1:26379,[::1]:26380/caas/2") == RedisTarget(
        "sentinel", (("127.0.0.1", 26379), ("::1", 26380)), "caas", 2
    )
    assert parse_redis_url("redis+cluster://127.0.0.1:7000") == RedisTarget(
        "cluster", (("127.0.0.1", 7000),), None, 0
    )
    # An IPv6 node after the first: urllib's urlsplit refuses it on newer patch releases.
    assert parse_redis_url("redis+cluster://127.0.0.1:7000,[::1]:7001").nodes == (
        ("127.0.0.1", 7000), ("::1", 7001))
    assert parse_redis_url("redis://127.0.0.1:6379/0").kind == "standalone"
    for bad in ("redis+sentinel://127.0.0.1:1/", "redis+sentinel://127.0.0.1/caas",
                "redis+cluster://127.0.0.1:1/3", "redis+sentinel://:pw@127.0.0.1:1/caas",
                "redis+cluster://127.0.0.1:1?ssl=true", "redis+sentinel://127.0.0.1:1/caas#x"):
        with pytest.raises(ValueError):
            parse_redis_url(bad)


def _one_bill(bridge: AioThread, url: str) -> tuple[str | None, int]:
    client = bridge.resource(redis_client(url, max_connections=2, decode_responses=True))

    async def bill() -> tuple[str | None, int]:
        redis = await client.get()
        await redis.hset(DOG_NAMES_KEY, "rex.jpg", "Rex")
        reply = await redis.eval(billing.SCRIPT, *billing.script_args("rex.jpg"))
        return billing.parse(reply)

    return bridge.run(asyncio.wait_for(bill(), 30))


def test_sentinel_and_cluster_clients_on_the_bridge(bridge: AioThread) -> None:
    """The factory's clients run the demo's Lua call and close cleanly at stop
    (the bridge guard fails the test on an unclosed connection or a pending task)."""
    with SentinelGroup(replicas=1, sentinels=1) as sentinel, ClusterGroup() as cluster:
        assert _one_bill(bridge, sentinel.url) == ("Rex", 1)
        assert _one_bill(bridge, cluster.url) == ("Rex", 1)
        assert cluster.master_of(BILLING_KEY) is cluster.master_of(DOG_NAMES_KEY)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_failover_under_load(kind: str) -> None:
    result = redis_failover_drill(kind)
    print(f"\n{kind}: " + json.dumps(result.as_json()))
    assert result.problems() == []
    assert result.ok > 0 and result.billed == result.ok
    for event in result.events:
        assert 0 < event.promoted_s < FAILOVER_TIMEOUT
        assert 0 < event.every_worker_s < FAILOVER_TIMEOUT + RECOVERY_TIMEOUT
        assert event.served > 0


def test_a_bill_on_a_sentinel_master_is_answered_once_a_replica_has_it(bridge: AioThread) -> None:
    # Replication is asynchronous: a 200 must not stand on a bill only the master
    # holds (a SIGKILL would lose it). With the replica frozen, the bill raises
    # (the demo answers 503) after WAIT's bound instead of returning.
    with SentinelGroup(replicas=1, sentinels=1) as group:
        client = bridge.resource(redis_client(group.url, max_connections=2))
        master = group.master()
        replica = next(n for n in group.nodes if n not in group.sentinels and n is not master)

        async def bill() -> tuple[str | None, int]:
            redis = await client.get()
            await redis.hset(DOG_NAMES_KEY, "rex.jpg", "Rex")
            return billing.parse(await aio_calls.bill(redis, "rex.jpg"))

        assert bridge.run(asyncio.wait_for(bill(), 30)) == ("Rex", 1)
        assert replica.execute("GET", BILLING_KEY) == "1"  # there before the answer
        assert replica.pid is not None
        with closing(sync_client(group.url, socket_timeout=10.0)) as blocking:
            assert billing.parse(sync_calls.bill(blocking, "rex.jpg")) == ("Rex", 2)
            os.kill(replica.pid, signal.SIGSTOP)
            try:
                with pytest.raises(redis.exceptions.TimeoutError, match="reached no replica"):
                    bridge.run(asyncio.wait_for(bill(), 30))
                with pytest.raises(redis.exceptions.TimeoutError, match="reached no replica"):
                    sync_calls.bill(blocking, "rex.jpg")  # the sync modes' path
            finally:
                os.kill(replica.pid, signal.SIGCONT)
