"""The demo's work written with blocking clients (requests, redis-py).

Used by the ``sync`` mode for everything, and by ``flask-async`` for the
``/track`` stream (an asgiref-wrapped view cannot keep a loop alive across
the chunks of a streamed response).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator
from typing import Any

import redis
import redis.exceptions
import requests
from redis.sentinel import SentinelConnectionPool

from . import billing as billing_script
from .catalog import BILLING_KEY, TRACK_CHANNEL_PREFIX
from .models import DelayResult, DogResult, TrackClock, TrackEvent

__all__ = ("bill", "billing", "fan_out", "fetch_dog", "publish", "track")

_SUBSCRIBE_TIMEOUT = 5.0
#: Longest a stream waits before it checks for shutdown and its deadline again.


def fetch_dog(
    http: requests.Session, client: redis.Redis, upstream: str, latency_ms: int, timeout: float
) -> DogResult:
    """Fetch a picture, then look its name up and bill it: one atomic Redis round trip."""
    response = http.get(f"{upstream}/dog", params={"latency": latency_ms}, timeout=timeout)
    response.raise_for_status()
    filename = response.headers["X-Filename"]
    name, billed = billing_script.parse(bill(client, filename))
    return DogResult(response.content, filename, name or "Unknown", billed)


def bill(client: redis.Redis, filename: str) -> Any:
    """Run the billing script; on a Sentinel master, answered once a replica has it.

    As :func:`demo_flask.aio_calls.bill`, with the blocking client.
    """
    args = billing_script.script_args(filename)
    if not isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool):
        return client.eval(billing_script.SCRIPT, *args)
    with client.pipeline(transaction=False) as pipe:
        pipe.eval(billing_script.SCRIPT, *args)
        pipe.wait(1, billing_script.REPLICA_WAIT_MS)
        reply, acknowledged = pipe.execute()
    if acknowledged < 1:
        raise redis.exceptions.TimeoutError(
            f"the bill reached no replica within {billing_script.REPLICA_WAIT_MS} ms")
    return reply


def fan_out(
    http: requests.Session, upstream: str, seconds: float, n: int, timeout: float
) -> DelayResult:
    """Make ``n`` calls to the upstream's slow endpoint, one after the other."""
    started = time.perf_counter()
    for _ in range(n):
        response = http.get(f"{upstream}/delay", params={"seconds": seconds}, timeout=timeout)
        response.raise_for_status()
    return DelayResult(n, seconds, time.perf_counter() - started)


def billing(client: redis.Redis) -> int:
    """The number of ``/dog`` requests billed so far."""
    return int(client.get(BILLING_KEY) or 0)


def publish(client: redis.Redis, position: dict[str, Any]) -> int:
    """Publish a position on its order's channel; returns the number of listeners."""
    channel = TRACK_CHANNEL_PREFIX + str(position["order_id"])
    return int(client.publish(channel, json.dumps(position, sort_keys=True)))


def track(
    client: redis.Redis,
    order_id: str,
    *,
    max_seconds: float,
    heartbeat: float,
    stopping: Callable[[], bool] = lambda: False,
) -> Generator[TrackEvent, None, None]:
    """Stream an order's positions from Redis pub/sub (see ``aio_calls.track``)."""
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    try:
        pubsub.subscribe(TRACK_CHANNEL_PREFIX + order_id)
        _confirmed(pubsub)
        yield TrackEvent("subscribed", {"order_id": order_id})
        clock = TrackClock(order_id, max_seconds=max_seconds, heartbeat=heartbeat,
                           stopping=stopping)  # fmt: skip
        while True:
            event = clock.due()
            if event is None:
                message = pubsub.get_message(
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
        pubsub.close()


def _confirmed(pubsub: redis.client.PubSub) -> None:
    deadline = time.monotonic() + _SUBSCRIBE_TIMEOUT
    while (remaining := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=remaining)
        if message is not None and message["type"] == "subscribe":
            return
    raise TimeoutError(f"Redis did not confirm the subscription within {_SUBSCRIBE_TIMEOUT}s")
