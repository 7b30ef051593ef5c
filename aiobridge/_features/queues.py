"""janus queues bound to the bridge's loop, closed when the bridge stops.

A ``janus.Queue`` has two faces: ``sync_q`` for threads (``put``/``get``
block the calling thread) and ``async_q`` for coroutines (``await put``/
``await get``). :meth:`aiobridge.AioThread.queue` makes one on the bridge's
loop (janus queues must be used by one event loop only) and the bridge closes
it at ``stop()``, after in-flight calls, so no notifier task is left pending.

Sync producer, async consumer (e.g. request handlers feeding a batch writer
that runs on the loop)::

    events = bridge.queue(maxsize=1000)     # put() blocks when 1000 are waiting

    async def writer() -> None:
        while True:
            try:
                event = await events.async_q.get()
            except janus.AsyncQueueShutDown:
                return                      # shut down and drained
            await store(event)

    done = bridge.spawn(writer())
    events.sync_q.put({"user": 42}, timeout=1.0)   # from any thread

Async producer, sync consumer (e.g. Redis pub/sub messages read by a worker
thread)::

    messages = bridge.queue(maxsize=100)

    async def pump() -> None:
        async with (await redis.get()).pubsub() as pubsub:
            await pubsub.subscribe("orders")
            async for message in pubsub.listen():
                await messages.async_q.put(message)   # waits while the thread is behind

    bridge.spawn(pump())
    message = messages.sync_q.get(timeout=5.0)        # in the worker thread

For a single consumer of an async generator, :meth:`~aiobridge.AioThread.iterate`
is simpler: it closes the generator when the consumer stops.

Draining before stop: ``stop()`` closes queues with janus's ``close()``
(``shutdown(immediate=True)``), which **drops** items still queued and makes
blocked ``put``/``get`` raise ``SyncQueueShutDown``/``AsyncQueueShutDown``. To
lose nothing, stop the producers first, then ``queue.shutdown()`` (further
``put`` raise; ``get`` keeps returning items until the queue is empty, then
raises), wait for the consumer to finish (``done.result(timeout)``), and only
then ``bridge.stop()``. With ``task_done()`` in the consumer,
``await queue.async_q.join()`` waits until every item was handled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import janus

from .._core.awaitables import close_unstarted, describe
from .resources import keep_after_fork

if TYPE_CHECKING:
    from .._core.portal import Portal
    from .._core.switch import Switch

__all__ = ("BridgeQueue", "SwitchingSyncQueue", "make_queue", "tracker_of")

T = TypeVar("T")

#: How long making a queue may wait for the loop.
CREATE_TIMEOUT = 5.0


class SwitchingSyncQueue(janus.SyncQueue[T]):
    """janus's sync side, whose waits switch to the loop in a request greenlet (see above)."""

    __slots__ = ("_async", "_portal", "_sync")

    def __init__(self, sync: janus.SyncQueue[T], async_: janus.AsyncQueue[T],
                 portal: Portal) -> None:
        self._sync = sync
        self._async = async_
        self._portal = portal

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        switch = self._portal.switch_here() if block else None
        if switch is None:
            return self._sync.put(item, block, timeout)
        _check(timeout)
        try:
            return self._sync.put_nowait(item)
        except janus.SyncQueueFull:
            pass
        _wait(switch, self._async.put(item), timeout, janus.SyncQueueFull)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        switch = self._portal.switch_here() if block else None
        if switch is None:
            return self._sync.get(block, timeout)
        _check(timeout)
        try:
            return self._sync.get_nowait()
        except janus.SyncQueueEmpty:
            pass
        return _wait(switch, self._async.get(), timeout, janus.SyncQueueEmpty)

    def join(self) -> None:
        switch = self._portal.switch_here()
        if switch is None:
            return self._sync.join()
        if self._sync.unfinished_tasks:
            _wait(switch, self._async.join(), None, TimeoutError)

    def put_nowait(self, item: T) -> None:
        self._sync.put_nowait(item)

    def get_nowait(self) -> T:
        return self._sync.get_nowait()

    def task_done(self) -> None:
        self._sync.task_done()

    def qsize(self) -> int:
        return self._sync.qsize()

    def empty(self) -> bool:
        return self._sync.empty()

    def full(self) -> bool:
        return self._sync.full()

    def shutdown(self, immediate: bool = False) -> None:
        self._sync.shutdown(immediate)

    @property
    def maxsize(self) -> int:
        return self._sync.maxsize

    @property
    def closed(self) -> bool:
        return self._sync.closed

    @property
    def unfinished_tasks(self) -> int:
        return self._sync.unfinished_tasks


def _check(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


def _wait(switch: Switch, awaitable: Awaitable[T], timeout: float | None,
          expired: type[Exception]) -> T:
    """Await ``awaitable`` through the request greenlet's switch, with janus's sync errors."""
    try:
        value: T = switch(awaitable if timeout is None else _within(awaitable, timeout, expired))
    except janus.AsyncQueueShutDown:
        raise janus.SyncQueueShutDown from None
    except asyncio.CancelledError:  # the client went away
        close_unstarted(awaitable)
        raise concurrent.futures.CancelledError() from None
    return value


async def _within(awaitable: Awaitable[T], limit: float, expired: type[Exception]) -> T:
    timeout = asyncio.timeout(limit)
    try:
        async with timeout:
            return await awaitable
    except TimeoutError:
        if timeout.expired():
            raise expired() from None
        raise


class BridgeQueue(janus.Queue[T]):
    """The ``janus.Queue`` of :meth:`aiobridge.AioThread.queue`: ``sync_q`` is a
    :class:`SwitchingSyncQueue`; everything else is janus's."""

    def __init__(self, maxsize: int, portal: Portal) -> None:
        super().__init__(maxsize)
        self._switching = SwitchingSyncQueue(super().sync_q, self.async_q, portal)

    @property
    def sync_q(self) -> janus.SyncQueue[T]:  # type: ignore[override]
        return self._switching


class _Queues:
    """The janus queues made on one loop of one bridge, closed when it stops."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queues: weakref.WeakSet[janus.Queue[Any]] = weakref.WeakSet()

    async def close_all(self) -> None:
        queues = list(self.queues)
        for queue in queues:
            queue.close()
        for queue in reversed(queues):
            await queue.wait_closed()


_TRACKERS: weakref.WeakKeyDictionary[Portal, _Queues] = weakref.WeakKeyDictionary()
_TRACKERS_LOCK = threading.Lock()


def _track(portal: Portal, queue: janus.Queue[Any]) -> None:
    loop = portal.loop
    assert loop is not None
    with _TRACKERS_LOCK:
        tracker = _TRACKERS.get(portal)
        if tracker is None or tracker.loop is not loop:
            if tracker is not None:
                keep_after_fork(tracker)  # the parent's queues, bound to the parent's loop
            tracker = _TRACKERS[portal] = _Queues(loop)
            portal.add_closer(tracker.close_all)
        tracker.queues.add(queue)


def tracker_of(portal: Portal) -> _Queues | None:
    """The queues made on the bridge's current loop, if any (read on the loop thread)."""
    tracker = _TRACKERS.get(portal)
    return tracker if tracker is not None and tracker.loop is portal.loop else None


async def _new_queue(portal: Portal, maxsize: int) -> janus.Queue[Any]:
    queue: janus.Queue[Any] = BridgeQueue(maxsize, portal)
    await queue.async_q.join()  # nothing to wait for: binds the queue to this loop
    _track(portal, queue)
    return queue


def make_queue(portal: Portal, maxsize: int) -> janus.Queue[Any]:
    """The implementation of :meth:`aiobridge.AioThread.queue`."""
    if isinstance(maxsize, bool) or not isinstance(maxsize, int):
        raise TypeError(f"maxsize must be an int, got {describe(maxsize)}")
    if portal.on_loop_thread():
        # In a coroutine on the bridge: janus binds it to this loop on first async use.
        queue: janus.Queue[Any] = BridgeQueue(maxsize, portal)
        _track(portal, queue)
        return queue
    return portal.run(_new_queue(portal, maxsize), CREATE_TIMEOUT)
