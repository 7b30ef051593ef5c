"""The ways the demo's Flask app reaches the upstream and Redis, behind one interface.

Blocking modes (plain ``def`` views):

- ``sync``: requests + redis-py, one call after the other.
- ``gevent``: the same code under gunicorn's gevent workers (monkeypatched).
- ``embedded``: the anti-pattern, ``asyncio.run`` per request, so new aiohttp
  and Redis clients (and connections) for every request.
- ``embedded-thread``: the strongest home-made alternative: one persistent
  loop per worker thread, each with its own clients, driven by
  ``run_until_complete``; see :mod:`demo_flask.embedded_thread`.

Async modes (``async def`` views, run by ``app.async_to_sync``):

- ``flask-async``: Flask's own async views through asgiref, a new loop per
  call, so again new clients per request.
- ``flask-recipe``: the override in Flask's docs, one loop thread and
  ``run_coroutine_threadsafe``; see :mod:`demo_flask.recipe_mode`.
- ``bridge``: aiobridge; see :mod:`demo_flask.bridge_mode`.

The ``quart`` rewrite is a separate app (:mod:`demo_flask.quart_app`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, ClassVar, TypeVar

import aiohttp
import redis
import redis.asyncio as aredis
import requests
from flask import Response

from . import aio_calls, sync_calls
from .models import DelayResult, DogResult, Settings, TrackEvent

__all__ = (
    "AsyncMode",
    "BlockingMode",
    "EmbeddedMode",
    "FlaskAsyncMode",
    "GeventMode",
    "Mode",
    "SyncMode",
    "drive",
    "sse_events",
    "sse_response",
)

T = TypeVar("T")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_response(body: Iterator[str] | Any) -> Response:
    """A streamed ``text/event-stream`` response around ``body``."""
    return Response(body, mimetype="text/event-stream", headers=SSE_HEADERS)


def sse_events(events: Iterator[TrackEvent]) -> Iterator[str]:
    """Render events as SSE text; closing this closes ``events`` too."""
    with contextlib.closing(events):  # type: ignore[type-var]
        for event in events:
            yield event.to_sse()


async def _anext(iterator: AsyncIterator[T]) -> T:
    return await anext(iterator)


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def drive(run: Callable[[Any], Any], events: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from sync code, one ``run(...)`` per item."""
    try:
        while True:
            try:
                item: T = run(_anext(events))
            except StopAsyncIteration:
                return
            yield item
    finally:
        run(_aclose(events))


class Mode(abc.ABC):
    """What every mode provides; the views never know which one runs."""

    name: ClassVar[str]
    is_async: ClassVar[bool]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stopping = threading.Event()

    @abc.abstractmethod
    def track_response(self, order_id: str) -> Response:
        """The SSE response streaming ``order_id``'s positions."""

    def stats(self) -> dict[str, Any]:
        """Mode-specific figures for ``/stats`` (none by default)."""
        return {}

    def begin_shutdown(self) -> None:
        """End open ``/track`` streams (within ``STOP_POLL``); new ones end at once."""
        self._stopping.set()

    def close(self) -> None:
        """Release every client and loop the mode holds; ends open streams."""
        self.begin_shutdown()

    def _track_options(self) -> dict[str, Any]:
        return {
            "max_seconds": self.settings.sse_max_seconds,
            "heartbeat": self.settings.sse_heartbeat,
            "stopping": self._stopping.is_set,
        }


class BlockingMode(Mode):
    """A mode served by plain ``def`` views."""

    is_async = False

    @abc.abstractmethod
    def dog(self, latency_ms: int) -> DogResult: ...

    @abc.abstractmethod
    def delay(self, seconds: float, n: int) -> DelayResult: ...

    @abc.abstractmethod
    def publish(self, position: dict[str, Any]) -> int: ...

    @abc.abstractmethod
    def billing(self) -> int: ...


class AsyncMode(Mode):
    """A mode served by ``async def`` views."""

    is_async = True

    @abc.abstractmethod
    async def dog(self, latency_ms: int) -> DogResult: ...

    @abc.abstractmethod
    async def delay(self, seconds: float, n: int) -> DelayResult: ...

    @abc.abstractmethod
    async def publish(self, position: dict[str, Any]) -> int: ...

    @abc.abstractmethod
    async def billing(self) -> int: ...


class SyncMode(BlockingMode):
    """requests (a session per thread) and one thread-safe redis-py pool."""

    name = "sync"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._redis = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _http(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(session)
        return session

    def dog(self, latency_ms: int) -> DogResult:
        return sync_calls.fetch_dog(
            self._http(), self._redis, self.settings.upstream_url, latency_ms,
            self.settings.http_timeout,
        )  # fmt: skip

    def delay(self, seconds: float, n: int) -> DelayResult:
        return sync_calls.fan_out(
            self._http(), self.settings.upstream_url, seconds, n, self.settings.http_timeout
        )

    def publish(self, position: dict[str, Any]) -> int:
        return sync_calls.publish(self._redis, position)

    def billing(self) -> int:
        return sync_calls.billing(self._redis)

    def track_response(self, order_id: str) -> Response:
        events = sync_calls.track(self._redis, order_id, **self._track_options())
        return sse_response(sse_events(events))

    def close(self) -> None:
        super().close()
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._redis.close()


class GeventMode(SyncMode):
    """The ``sync`` mode's code, meant for gunicorn's gevent workers.

    Nothing differs but the name: the worker class (``--worker-class gevent``)
    monkeypatches sockets, so requests and redis-py yield to other greenlets
    while they wait, instead of holding a thread.
    """

    name = "gevent"


class _FreshClients:
    """Coroutines that open new clients for every call and close them after."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _http(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(total=self.settings.http_timeout)
        return aiohttp.ClientSession(timeout=timeout)

    def _redis(self) -> aredis.Redis:
        return aredis.Redis.from_url(self.settings.redis_url, decode_responses=True)

    async def dog(self, latency_ms: int) -> DogResult:
        async with self._http() as http, self._redis() as client:
            return await aio_calls.fetch_dog(http, client, self.settings.upstream_url, latency_ms)

    async def delay(self, seconds: float, n: int) -> DelayResult:
        async with self._http() as http:
            return await aio_calls.fan_out(http, self.settings.upstream_url, seconds, n)

    async def publish(self, position: dict[str, Any]) -> int:
        async with self._redis() as client:
            return await aio_calls.publish(client, position)

    async def billing(self) -> int:
        async with self._redis() as client:
            return await aio_calls.billing(client)

    async def track(self, order_id: str, **options: Any) -> AsyncGenerator[TrackEvent, None]:
        async with self._redis() as client:
            events = aio_calls.track(client, order_id, **options)
            try:
                async for event in events:
                    yield event
            finally:
                await events.aclose()


class EmbeddedMode(BlockingMode):
    """``asyncio.run`` per request: a new loop and new clients every time."""

    name = "embedded"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._fresh = _FreshClients(settings)

    def dog(self, latency_ms: int) -> DogResult:
        return asyncio.run(self._fresh.dog(latency_ms))

    def delay(self, seconds: float, n: int) -> DelayResult:
        return asyncio.run(self._fresh.delay(seconds, n))

    def publish(self, position: dict[str, Any]) -> int:
        return asyncio.run(self._fresh.publish(position))

    def billing(self) -> int:
        return asyncio.run(self._fresh.billing())

    def track_response(self, order_id: str) -> Response:
        return sse_response(sse_events(self._track(order_id)))

    def _track(self, order_id: str) -> Iterator[TrackEvent]:
        # One loop for the life of the stream, as asyncio.run would give it.
        with asyncio.Runner() as runner:
            yield from drive(runner.run, self._fresh.track(order_id, **self._track_options()))


class FlaskAsyncMode(AsyncMode):
    """Flask's own ``async def`` views: asgiref runs each call on a new loop.

    Clients cannot outlive the call's loop, so every request opens new ones.
    The ``/track`` stream uses redis-py: a view run through asgiref cannot keep
    its loop alive across the chunks of a streamed response.
    """

    name = "flask-async"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._fresh = _FreshClients(settings)
        self._sync_redis = redis.Redis.from_url(settings.redis_url, decode_responses=True)

    async def dog(self, latency_ms: int) -> DogResult:
        return await self._fresh.dog(latency_ms)

    async def delay(self, seconds: float, n: int) -> DelayResult:
        return await self._fresh.delay(seconds, n)

    async def publish(self, position: dict[str, Any]) -> int:
        return await self._fresh.publish(position)

    async def billing(self) -> int:
        return await self._fresh.billing()

    def track_response(self, order_id: str) -> Response:
        events = sync_calls.track(self._sync_redis, order_id, **self._track_options())
        return sse_response(sse_events(events))

    def close(self) -> None:
        super().close()
        self._sync_redis.close()
