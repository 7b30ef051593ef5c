"""The ``bridge`` mode: aiobridge's one loop per process, with shared clients.

The views are the same ``async def`` views as ``flask-async``; the
:class:`~aiobridge.flask.AioBridge` extension runs them on the worker's
long-lived loop, where one ``aiohttp.ClientSession`` and one ``redis.asyncio``
pool serve every request. ``/track`` streams an async generator through the
bridge (``ext.stream``); when the client goes away the generator is cancelled
on the loop and its subscription released.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import redis.asyncio as aredis
from flask import Flask, Response

from aiobridge.clients import http_session, redis_client
from aiobridge.flask import AioBridge
from aiobridge.flask import shutdown as stop_bridge

from . import aio_calls
from .models import DelayResult, DogResult, Settings
from .modes import SSE_HEADERS, AsyncMode

__all__ = ("BridgeLoopMode", "BridgeMode")


class BridgeMode(AsyncMode):
    """Async views on the shared loop; one HTTP pool and one Redis pool per worker."""

    name = "bridge"

    def __init__(self, app: Flask, settings: Settings) -> None:
        super().__init__(settings)
        self._app = app
        self.ext = AioBridge(app)
        timeout = aiohttp.ClientTimeout(total=settings.http_timeout)
        self.http = self.ext.resource(http_session(timeout=timeout), app=app)
        # Commands share a small bounded pool: Redis answers in well under a
        # millisecond, so a few connections serve every thread of the worker.
        self.redis = self.ext.resource(
            redis_client(
                settings.redis_url, max_connections=settings.redis_pool, decode_responses=True
            ),
            app=app,
        )
        # A subscription holds its connection while the stream lasts: keep the
        # streams off the command pool so they can never starve /dog.
        self.subscriber = self.ext.resource(
            redis_client(settings.redis_url, decode_responses=True), app=app
        )

    async def _clients(self) -> tuple[aiohttp.ClientSession, aredis.Redis]:
        return await self.http.get(), await self.redis.get()

    async def dog(self, latency_ms: int) -> DogResult:
        http, client = await self._clients()
        return await aio_calls.fetch_dog(http, client, self.settings.upstream_url, latency_ms)

    async def delay(self, seconds: float, n: int) -> DelayResult:
        http = await self.http.get()
        return await aio_calls.fan_out(http, self.settings.upstream_url, seconds, n)

    async def publish(self, position: dict[str, Any]) -> int:
        return await aio_calls.publish(await self.redis.get(), position)

    async def billing(self) -> int:
        return await aio_calls.billing(await self.redis.get())

    async def _sse(self, order_id: str) -> AsyncGenerator[str, None]:
        client = await self.subscriber.get()
        events = aio_calls.track(client, order_id, **self._track_options())
        try:
            async for event in events:
                yield event.to_sse()
        finally:
            await events.aclose()

    def track_response(self, order_id: str) -> Response:
        return self.ext.stream(
            self._sse(order_id), mimetype="text/event-stream", headers=SSE_HEADERS
        )

    def stats(self) -> dict[str, Any]:
        """The worker's bridge counters; loop lags in seconds, named ``*_seconds``."""
        figures = self.ext.get_bridge(self._app).stats().as_dict()
        return {"bridge": {f"{key}_seconds" if key.startswith("loop_lag_") else key: value
                           for key, value in figures.items()}}  # fmt: skip

    def close(self) -> None:
        super().close()
        stop_bridge(self._app)


class BridgeLoopMode(BridgeMode):
    """The ``bridge`` mode's app served on the ASGI server's loop (:mod:`demo_flask.onloop_app`).

    The views, clients and answers are the bridge mode's; only the serving
    differs: one greenlet per request on the server's loop, which the bridge
    adopts at lifespan startup and stops at lifespan shutdown. Served by
    anything else (Flask's test client, a WSGI server), it is the bridge mode
    with its own loop thread under another name.
    """

    name = "bridge-loop"

    def __init__(self, app: Flask, settings: Settings) -> None:
        super().__init__(app, settings)
        #: Set by :mod:`demo_flask.onloop_app`: the server's lifespan owns the bridge's stop.
        self.served_on_loop = False

    def close(self) -> None:
        if self.served_on_loop:  # the lifespan shutdown stops the adopted bridge
            self.begin_shutdown()
            return
        super().close()
