"""The demo's work written once with async clients (aiohttp, redis.asyncio).

Every async mode runs these coroutines; the modes differ only in which loop
runs them and how long the clients live.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import aiohttp
import redis.asyncio as aredis
import redis.exceptions
from redis.asyncio.sentinel import SentinelConnectionPool

from . import billing as billing_script
from .catalog import BILLING_KEY, TRACK_CHANNEL_PREFIX
from .models import DelayResult, DogResult, TrackClock, TrackEvent

__all__ = ("bill", "billing", "fan_out", "fetch_dog", "publish", "track")

_SUBSCRIBE_TIMEOUT = 5.0
#: Longest a stream waits before it checks for shutdown and its deadline again.


async def fetch_dog(
    http: aiohttp.ClientSession, client: aredis.Redis, upstream: str, latency_ms: int
) -> DogResult:
    """Fetch a picture, then look its name up and bill it: one atomic Redis round trip."""
    # The query is formatted here, not passed as params=: yarl's query encoding
    # was a tenth of the loop's time per /dog in the profile (benchmarks.profile_demo).
    async with http.get(f"{upstream}/dog?latency={int(latency_ms)}") as response:
        response.raise_for_status()
        image = await response.read()
        filename = response.headers["X-Filename"]
    name, billed = billing_script.parse(await bill(client, filename))
    return DogResult(image, filename, name or "Unknown", billed)


async def bill(client: aredis.Redis, filename: str) -> Any:
    """Run the billing script; with a Sentinel-watched master, only once a replica has it.

    Replication is asynchronous: a master killed (SIGKILL) right after it
    answered would take the last bills with it, though their requests were
    answered 200 (seen in a failover drill: 8 of 858). So on a Sentinel master
    the script and ``WAIT 1`` go down one connection together: the request is
    answered only once a replica (the one Sentinel will promote has the
    highest offset) acknowledged the bill, and a 503 when none did within
    :data:`demo_flask.billing.REPLICA_WAIT_MS`. Not done for a Redis Cluster (see
    docs/deployment.md): its client routes ``WAIT`` to every master.
    """
    args = billing_script.script_args(filename)
    if not isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool):
        return await client.eval(billing_script.SCRIPT, *args)
    async with client.pipeline(transaction=False) as pipe:
        pipe.eval(billing_script.SCRIPT, *args)
        pipe.wait(1, billing_script.REPLICA_WAIT_MS)
        reply, acknowledged = await pipe.execute()
    if acknowledged < 1:
        raise redis.exceptions.TimeoutError(
            f"the bill reached no replica within {billing_script.REPLICA_WAIT_MS} ms")
    return reply


async def fan_out(
    http: aiohttp.ClientSession, upstream: str, seconds: float, n: int
) -> DelayResult:
    """Make ``n`` concurrent calls to the upstream's slow endpoint."""

    async def one() -> None:
        async with http.get(f"{upstream}/delay?seconds={float(seconds)!r}") as response:
            response.raise_for_status()
            await response.read()

    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(n):
                group.create_task(one())
    except BaseExceptionGroup as failed:
        # The first call failed and the others were cancelled. Raise that failure
        # itself: the error handlers (502 upstream error, 504 timeout) match an
        # exception's type, never an ExceptionGroup, which would become a 500.
        raise _first_failure(failed) from None
    return DelayResult(n, seconds, time.perf_counter() - started)


def _first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_failure(first) if isinstance(first, BaseExceptionGroup) else first


async def billing(client: aredis.Redis) -> int:
    """The number of ``/dog`` requests billed so far."""
    return int(await client.get(BILLING_KEY) or 0)


async def publish(client: aredis.Redis, position: dict[str, Any]) -> int:
    """Publish a position on its order's channel; returns the number of listeners."""
    channel = TRACK_CHANNEL_PREFIX + str(position["order_id"])
    return int(await client.publish(channel, json.dumps(position, sort_keys=True)))


async def track(
    client: aredis.Redis,
    order_id: str,
    *,
    max_seconds: float,
    heartbeat: float,
    stopping: Callable[[], bool] = lambda: False,
) -> AsyncGenerator[TrackEvent, None]:
    """Stream an order's positions from Redis pub/sub.

    Yields ``subscribed`` once the subscription is confirmed, then each
    ``position``, a ``heartbeat`` whenever ``heartbeat`` seconds pass without
    one, and a final ``end`` on a terminal status, after ``max_seconds`` or
    when ``stopping()`` turns true. Closing the generator early (the client
    went away) releases the subscription too.
    """
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(TRACK_CHANNEL_PREFIX + order_id)
        await _confirmed(pubsub)
        yield TrackEvent("subscribed", {"order_id": order_id})
        clock = TrackClock(order_id, max_seconds=max_seconds, heartbeat=heartbeat,
                           stopping=stopping)  # fmt: skip
        while True:
            event = clock.due()
            if event is None:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=clock.wait()
                )
                events = [] if message is None else clock.on_message(message["data"])
            else:
                events = [event]
            for event in events:
                yield event
                if event.kind == "end":
                    return
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def _confirmed(pubsub: aredis.client.PubSub) -> None:
    deadline = time.monotonic() + _SUBSCRIBE_TIMEOUT
    while (remaining := deadline - time.monotonic()) > 0:
        message = await pubsub.get_message(timeout=remaining)
        if message is not None and message["type"] == "subscribe":
            return
    raise TimeoutError(f"Redis did not confirm the subscription within {_SUBSCRIBE_TIMEOUT}s")

