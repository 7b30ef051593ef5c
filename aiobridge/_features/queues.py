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
import threading
import weakref
from typing import TYPE_CHECKING, Any

import janus

from .._core.awaitables import describe
from .resources import keep_after_fork

if TYPE_CHECKING:
    from .._core.portal import Portal

__all__ = ("make_queue", "tracker_of")

#: How long making a queue may wait for the loop.
CREATE_TIMEOUT = 5.0


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
    queue: janus.Queue[Any] = janus.Queue(maxsize)
    await queue.async_q.join()  # nothing to wait for: binds the queue to this loop
    _track(portal, queue)
    return queue


def make_queue(portal: Portal, maxsize: int) -> janus.Queue[Any]:
    """The implementation of :meth:`aiobridge.AioThread.queue`."""
    if isinstance(maxsize, bool) or not isinstance(maxsize, int):
        raise TypeError(f"maxsize must be an int, got {describe(maxsize)}")
    if portal.on_loop_thread():
        # In a coroutine on the bridge: janus binds it to this loop on first async use.
        queue: janus.Queue[Any] = janus.Queue(maxsize)
        _track(portal, queue)
        return queue
    return portal.run(_new_queue(portal, maxsize), CREATE_TIMEOUT)
