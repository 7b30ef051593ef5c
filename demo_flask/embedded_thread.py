"""The ``embedded-thread`` mode: one persistent event loop per worker thread.

The strongest home-made alternative to a bridge: each gunicorn worker thread
builds its own loop, ``aiohttp.ClientSession`` and ``redis.asyncio`` pool on
first use, keeps them for the life of the thread and drives them with
``run_until_complete``. Connections are pooled per thread, never shared
across threads (loop-bound clients must not be).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import aiohttp
import redis.asyncio as aredis
from flask import Response

from . import aio_calls
from .models import DelayResult, DogResult, Settings, TrackEvent
from .modes import BlockingMode, drive, sse_events, sse_response

__all__ = ("EmbeddedThreadMode",)

T = TypeVar("T")


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
        return sse_response(sse_events(self._track(order_id)))

    def _track(self, order_id: str) -> Iterator[TrackEvent]:
        state = self._loop()
        with state.lock:  # the whole stream: the loop is this thread's until it ends
            try:
                events = aio_calls.track(state.redis, order_id, **self._track_options())
                yield from drive(state.run, events)
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
