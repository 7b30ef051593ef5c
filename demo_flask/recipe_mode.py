"""The ``flask-recipe`` mode: the loop-thread override from Flask's own documentation.

Flask's docs ("Async with Gevent", section "Combining with async/await") show
how to run ``async def`` views on one long-lived event loop instead of a new
loop per call: create a loop when the app is built, run it in the background,
and override ``Flask.async_to_sync`` so that each call is handed to that loop
with ``asyncio.run_coroutine_threadsafe`` while the request waits on the
future's ``result()``. This mode is that recipe, on a thread (the docs use a
greenlet because they run under gevent), and nothing more: the result is
awaited without a deadline, nothing checks for a fork, and nothing drains the
loop when the worker stops. Its clients (one aiohttp session, one Redis pool)
live on that loop, as with the bridge.

It exists to measure what aiobridge adds over those ten lines, per request
(``benchmarks.load_demo``) and under faults (``benchmarks.bm_faults``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any, TypeVar

from flask import Flask, Response

from .models import DelayResult, DogResult, Settings, TrackEvent
from .modes import AsyncMode, drive, sse_events, sse_response
from .shared_clients import SharedClients

__all__ = ("FlaskRecipeMode",)

T = TypeVar("T")
#: How long ``close()`` waits for the loop to close the clients and stop.
_CLOSE_TIMEOUT = 5.0


class FlaskRecipeMode(AsyncMode):
    """Async views on one loop thread started with the app, as Flask's docs show."""

    name = "flask-recipe"

    def __init__(self, app: Flask, settings: Settings) -> None:
        super().__init__(settings)
        # As in the docs: the loop starts when the app is built (with gunicorn
        # --preload, in the master), and every async view is submitted to it.
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="flask-recipe-loop", daemon=True
        )
        self._thread.start()
        self.clients = SharedClients(settings)
        app.async_to_sync = self._async_to_sync  # type: ignore[method-assign]

    def _async_to_sync(
        self, func: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            return self.run(func(*args, **kwargs))

        return run

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """The recipe's whole hand-off: submit to the loop, block on the result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _open(self) -> SharedClients:
        await self.clients.open()
        return self.clients

    async def dog(self, latency_ms: int) -> DogResult:
        return await (await self._open()).dog(latency_ms)

    async def delay(self, seconds: float, n: int) -> DelayResult:
        return await (await self._open()).delay(seconds, n)

    async def publish(self, position: dict[str, Any]) -> int:
        return await (await self._open()).publish(position)

    async def billing(self) -> int:
        return await (await self._open()).billing()

    async def _track(self, order_id: str) -> AsyncGenerator[TrackEvent, None]:
        clients = await self._open()
        async for event in clients.track(order_id, stopping=self._stopping.is_set):
            yield event

    def track_response(self, order_id: str) -> Response:
        # The recipe cannot return an async generator; drive it one run() per event.
        return sse_response(sse_events(drive(self.run, self._track(order_id))))

    def close(self) -> None:
        """What a careful user adds for shutdown: close the clients, stop the loop.

        In-flight calls are not drained: a request still waiting on ``result()``
        when the loop stops waits for ever (see ``benchmarks.bm_faults``).
        """
        super().close()
        if not self._thread.is_alive():  # e.g. forked: the loop thread stayed in the parent
            return
        closing = asyncio.run_coroutine_threadsafe(self.clients.close(), self.loop)
        with contextlib.suppress(concurrent.futures.TimeoutError):
            closing.result(_CLOSE_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(_CLOSE_TIMEOUT)
        if not self._thread.is_alive():
            self.loop.close()
