"""One aiohttp session and one Redis pool on one loop: what an async rewrite keeps.

The ``quart`` rewrite opens these when uvicorn starts serving; the
``flask-recipe`` mode opens them on its loop thread at the first call. Both
then run the same coroutines as every async mode (:mod:`demo_flask.aio_calls`),
sized like the bridge mode's clients: a bounded, blocking pool of
``Settings.redis_pool`` connections for commands and a client of its own for
pub/sub streams.

Example::

    clients = SharedClients(settings)
    await clients.open()          # on the loop that will use them
    result = await clients.dog(20)
    await clients.close()
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

import aiohttp
import redis.asyncio as aredis

from . import aio_calls
from .models import DelayResult, DogResult, Settings, TrackEvent

__all__ = ("SharedClients",)

_POOL_TIMEOUT = 5.0


class SharedClients:
    """Loop-bound clients shared by every request; ``open()`` and ``close()`` on that loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._http: aiohttp.ClientSession | None = None
        self._redis: aredis.Redis | None = None
        self._subscriber: aredis.Redis | None = None

    @property
    def is_open(self) -> bool:
        """Whether ``open()`` ran and ``close()`` did not."""
        return self._http is not None

    async def open(self) -> None:
        """Create the clients on the running loop (idempotent; nothing awaits, so no race)."""
        if self._http is not None:
            return
        url = self.settings.redis_url
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.http_timeout)
        )
        pool = aredis.BlockingConnectionPool.from_url(
            url, max_connections=self.settings.redis_pool, timeout=_POOL_TIMEOUT,
            decode_responses=True,
        )  # fmt: skip
        self._redis = aredis.Redis.from_pool(pool)
        self._subscriber = aredis.Redis.from_url(url, decode_responses=True)

    async def close(self) -> None:
        """Close the session and both Redis clients (idempotent)."""
        http, redis_client, subscriber = self._http, self._redis, self._subscriber
        self._http = self._redis = self._subscriber = None
        if http is not None:
            await http.close()
        for client in (redis_client, subscriber):
            if client is not None:
                await client.aclose()

    def _clients(self) -> tuple[aiohttp.ClientSession, aredis.Redis, aredis.Redis]:
        if self._http is None or self._redis is None or self._subscriber is None:
            raise RuntimeError("SharedClients used before open() or after close()")
        return self._http, self._redis, self._subscriber

    async def dog(self, latency_ms: int) -> DogResult:
        http, client, _ = self._clients()
        return await aio_calls.fetch_dog(http, client, self.settings.upstream_url, latency_ms)

    async def delay(self, seconds: float, n: int) -> DelayResult:
        http, _, _ = self._clients()
        return await aio_calls.fan_out(http, self.settings.upstream_url, seconds, n)

    async def publish(self, position: dict[str, Any]) -> int:
        return await aio_calls.publish(self._clients()[1], position)

    async def billing(self) -> int:
        return await aio_calls.billing(self._clients()[1])

    async def track(
        self, order_id: str, *, stopping: Callable[[], bool]
    ) -> AsyncGenerator[TrackEvent, None]:
        """The order's events on the subscriber client (see ``aio_calls.track``)."""
        events = aio_calls.track(
            self._clients()[2], order_id, max_seconds=self.settings.sse_max_seconds,
            heartbeat=self.settings.sse_heartbeat, stopping=stopping,
        )  # fmt: skip
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()
