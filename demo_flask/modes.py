"""The five ways the demo reaches the upstream and Redis, behind one interface.

Blocking modes (plain ``def`` views):

- ``sync``: requests + redis-py, one call after the other.
- ``embedded``: the anti-pattern, ``asyncio.run`` per request, so new aiohttp
  and Redis clients (and connections) for every request.
- ``embedded-thread``: the strongest home-made alternative: one persistent
  loop per worker thread, each with its own clients, driven by
  ``run_until_complete``.

Async modes (``async def`` views, run by ``app.async_to_sync``):

- ``flask-async``: Flask's own async views through asgiref, a new loop per
  call, so again new clients per request.
- ``bridge``: aiobridge; see :mod:`demo_flask.bridge_mode`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
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
    "EmbeddedThreadMode",
    "FlaskAsyncMode",
    "Mode",
    "SyncMode",
    "sse_response",
)

T = TypeVar("T")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_response(body: Iterator[str] | Any) -> Response:
    """A streamed ``text/event-stream`` response around ``body``."""
    return Response(body, mimetype="text/event-stream", headers=SSE_HEADERS)


def _sse(events: Iterator[TrackEvent]) -> Iterator[str]:
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


def _drive(run: Callable[[Any], Any], events: AsyncIterator[T]) -> Iterator[T]:
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
        return sse_response(_sse(sync_calls.track(self._redis, order_id, **self._track_options())))

    def close(self) -> None:
        super().close()
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._redis.close()


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
        return sse_response(_sse(self._track(order_id)))

    def _track(self, order_id: str) -> Iterator[TrackEvent]:
        # One loop for the life of the stream, as asyncio.run would give it.
        with asyncio.Runner() as runner:
            yield from _drive(runner.run, self._fresh.track(order_id, **self._track_options()))


class _ThreadLoop:
    """One worker thread's private loop and the clients bound to it.

    ``lock`` is held by the owning thread while it drives the loop (for a
    whole request, or a whole stream), so ``close()`` from another thread
    never closes a loop under a running request: it reports it busy instead,
    and the owner closes it when it finishes.
    """

    def __init__(self, settings: Settings) -> None:
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.loop = asyncio.new_event_loop()
        self.http, self.redis = self.loop.run_until_complete(self._open(settings))

    @staticmethod
    async def _open(settings: Settings) -> tuple[aiohttp.ClientSession, aredis.Redis]:
        timeout = aiohttp.ClientTimeout(total=settings.http_timeout)
        http = aiohttp.ClientSession(timeout=timeout)
        return http, aredis.Redis.from_url(settings.redis_url, decode_responses=True)

    def run(self, awaitable: Awaitable[T]) -> T:
        with self.lock:
            return self.loop.run_until_complete(awaitable)

    def close(self) -> bool:
        """Close clients and loop; False if the owning thread is using it right now."""
        if not self.lock.acquire(blocking=False):
            return False
        try:
            if not self.loop.is_closed():
                try:
                    self.run(self.http.close())
                    self.run(self.redis.aclose())
                    self.run(self.loop.shutdown_asyncgens())
                    self.run(self.loop.shutdown_default_executor())
                finally:
                    self.loop.close()
            return True
        finally:
            self.lock.release()


class EmbeddedThreadMode(BlockingMode):
    """One persistent loop per worker thread, with per-thread clients.

    Each thread builds its loop and clients on first use and keeps them, so
    connections are pooled per thread (never shared across threads, as
    loop-bound clients must not be). A loop inherited through ``fork`` is
    dropped, never reused. ``close()`` closes every idle loop at once; a
    thread still serving a request closes its own when that request ends.
    """

    name = "embedded-thread"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._local = threading.local()
        self._loops: list[_ThreadLoop] = []
        self._lock = threading.Lock()

    def _loop(self) -> _ThreadLoop:
        state: _ThreadLoop | None = getattr(self._local, "state", None)
        if state is None or state.pid != os.getpid() or state.loop.is_closed():
            if self._stopping.is_set():
                raise RuntimeError("the embedded-thread mode is closed")
            state = self._local.state = _ThreadLoop(self.settings)
            with self._lock:
                self._loops.append(state)
        return state

    def _run(self, awaitable: Awaitable[T]) -> T:
        state = self._loop()
        try:
            return state.run(awaitable)
        finally:
            self._retire_if_stopping(state)

    def _retire_if_stopping(self, state: _ThreadLoop) -> None:
        if self._stopping.is_set() and state.close():
            with self._lock:
                if state in self._loops:
                    self._loops.remove(state)

    def dog(self, latency_ms: int) -> DogResult:
        state = self._loop()
        url = self.settings.upstream_url
        return self._run(aio_calls.fetch_dog(state.http, state.redis, url, latency_ms))

    def delay(self, seconds: float, n: int) -> DelayResult:
        state = self._loop()
        return self._run(aio_calls.fan_out(state.http, self.settings.upstream_url, seconds, n))

    def publish(self, position: dict[str, Any]) -> int:
        return self._run(aio_calls.publish(self._loop().redis, position))

    def billing(self) -> int:
        return self._run(aio_calls.billing(self._loop().redis))

    def track_response(self, order_id: str) -> Response:
        return sse_response(_sse(self._track(order_id)))

    def _track(self, order_id: str) -> Iterator[TrackEvent]:
        state = self._loop()
        with state.lock:  # the whole stream: the loop is this thread's until it ends
            try:
                events = aio_calls.track(state.redis, order_id, **self._track_options())
                yield from _drive(state.run, events)
            finally:
                self._retire_if_stopping(state)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"loops": sum(1 for state in self._loops if not state.loop.is_closed())}

    def close(self) -> None:
        super().close()
        pid = os.getpid()
        with self._lock:
            states = list(self._loops)
        for state in states:
            if state.pid == pid:
                self._retire_if_stopping(state)


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
        return sse_response(_sse(events))

    def close(self) -> None:
        super().close()
        self._sync_redis.close()
