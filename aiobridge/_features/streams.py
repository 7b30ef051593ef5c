"""Async iterators and async context managers used from threads.

- :func:`iterate` turns an async iterator into a sync one, with a bounded
  read-ahead buffer and a deterministic close.
- :func:`enter` runs an async context manager's ``__aenter__`` and
  ``__aexit__`` in one task on the loop, around a with-block in a thread.

They back :meth:`aiobridge.AioThread.iterate` and
:meth:`~aiobridge.AioThread.enter`; queues live in :mod:`aiobridge.queues`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._core.awaitables import describe
from .._core.switch import Switch
from ..errors import BridgeTimeoutError
from . import contexts

if TYPE_CHECKING:

    from .._core.portal import Portal

__all__ = ("CLOSE_TIMEOUT", "enter", "iterate")

# Re-exported: AioThread.enter is implemented in .contexts.
enter = contexts.enter

T = TypeVar("T")

logger = logging.getLogger("aiobridge")

#: How long closing a stream (or leaving ``enter``) waits for the loop side to finish.
CLOSE_TIMEOUT = 5.0

_ITEM, _END, _ERROR = 0, 1, 2


# -- iterate ------------------------------------------------------------------------
class _Channel(Generic[T]):
    """Items from a producer task on the loop to consumer threads, at most ``size`` ahead.

    The producer takes a credit before it asks the async iterator for an item,
    so items fetched but not yet taken by a consumer never exceed ``size``.
    A consumer gives the credit back when it takes an item and wakes the
    producer only if it is waiting for one; while the producer is busy
    fetching, taking an item costs no call to the loop.
    """

    def __init__(self, portal: Portal, source: AsyncIterable[T], size: int) -> None:
        self.portal = portal
        self.source = source
        self.size = size
        self.credits = size
        self.items: deque[tuple[int, Any]] = deque()
        self.mutex = threading.Lock()
        self.ready = threading.Condition(self.mutex)
        self.consumers_waiting = 0
        self.notify_pending = False
        self.ended = False  # a terminal entry (_END or _ERROR) was queued
        self.halted = False
        self.producer_waiting: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.finished = threading.Event()
        #: Request greenlets on the loop's own thread waiting for an item.
        self.switch_waiters: list[asyncio.Future[None]] = []

    # loop side
    async def produce(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        iterator: AsyncIterator[T] | None = None
        try:
            iterator = aiter(self.source)
            while True:
                with self.mutex:
                    if self.halted:
                        return
                    if self.credits:
                        self.credits -= 1
                        waiter = None
                    else:
                        waiter = self.producer_waiting = self.loop.create_future()
                if waiter is not None:
                    await waiter
                    continue
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    self.push(_END, None)
                    return
                self.push_item(item)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # even KeyboardInterrupt belongs to the consumer
            self.push(_ERROR, exc)
        finally:
            aclose = getattr(iterator if iterator is not None else self.source, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except BaseException as exc:
                    # Only reported if the consumer can still see it.
                    self.push(_ERROR, exc)

    def push_item(self, item: T) -> None:
        """On the loop: queue an item; a waiting consumer is woken just before the
        loop next blocks, when it releases the GIL, so that it does not wake only
        to wait for the GIL (and several items can go out with one wake-up)."""
        with self.mutex:
            if self.ended:
                return
            self.items.append((_ITEM, item))
            if self.switch_waiters:
                self.notify_switched()
            if not self.consumers_waiting or self.notify_pending:
                return
            self.notify_pending = True
        self.portal.wake(self.notify_consumers)

    def notify_consumers(self) -> None:
        with self.mutex:
            self.notify_pending = False
            if self.consumers_waiting:
                self.ready.notify_all()
        self.notify_switched()

    def push(self, kind: int, value: Any) -> None:
        with self.mutex:
            if self.ended:
                return
            self.ended = kind != _ITEM
            self.items.append((kind, value))
            if self.consumers_waiting:
                self.ready.notify()
            if self.switch_waiters:
                self.notify_switched()

    def halt(self) -> None:
        """On the loop: stop the producer, gently if it waits for credits."""
        with self.mutex:
            self.halted = True
            waiter = self.producer_waiting
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif self.task is not None and not self.task.done():
            self.task.cancel()

    def notify_switched(self) -> None:
        """On the loop: wake the request greenlets waiting for an item (``aiobridge.onloop``)."""
        waiters, self.switch_waiters = self.switch_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # consumer side
    def take(self, timeout: float | None) -> tuple[int, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        # A request greenlet on the loop's own thread (aiobridge.onloop) waits by switching.
        switch = self.portal.switch_here()
        while True:
            with self.mutex:
                while not self.items and switch is None:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise BridgeTimeoutError(
                            f"AioThread.iterate() waited more than {timeout} s for the next "
                            "item; the stream was closed"
                        )
                    self.consumers_waiting += 1
                    try:
                        with self.portal.waiting_for_loop():
                            self.ready.wait(remaining)
                    finally:
                        self.consumers_waiting -= 1
                if self.items:
                    return self._pop()
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self.switch_waiters.append(waiter)
            assert switch is not None
            self.wait_switched(switch, waiter, deadline, timeout)

    def _pop(self) -> tuple[int, Any]:
        """Take the next entry (mutex held); give the producer its credit back."""
        kind, value = self.items.popleft()
        if kind != _ITEM:
            self.items.appendleft((kind, value))  # every later next() sees the end too
            return kind, value
        self.credits += 1
        waiter = self.producer_waiting
        if waiter is not None:
            self.producer_waiting = None
            assert self.loop is not None
            with contextlib.suppress(RuntimeError):  # loop closed: the producer is gone
                self.loop.call_soon_threadsafe(_resolve, waiter)
        return kind, value

    def wait_switched(self, switch: Switch, waiter: asyncio.Future[None],
                      deadline: float | None, timeout: float | None) -> None:
        remaining = None if deadline is None else deadline - time.monotonic()
        try:
            switch(_within(waiter, remaining))
        except TimeoutError:
            raise BridgeTimeoutError(
                f"AioThread.iterate() waited more than {timeout} s for the next item; "
                "the stream was closed"
            ) from None
        except asyncio.CancelledError:  # the client went away: the stream ends
            raise concurrent.futures.CancelledError() from None

    def settled(self, future: concurrent.futures.Future[None]) -> None:
        """Done callback of the producer's future: make sure consumers see an end."""
        if future.cancelled():
            self.push(_ERROR, concurrent.futures.CancelledError())
        elif future.exception() is not None:
            self.push(_ERROR, future.exception())
        else:
            self.push(_END, None)
        self.finished.set()


async def _within(waiter: asyncio.Future[None], limit: float | None) -> None:
    async with asyncio.timeout(limit):
        await waiter


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def iterate(
    portal: Portal, source: AsyncIterable[T], buffer: int, timeout: float | None
) -> Generator[T, None, None]:
    """The implementation of :meth:`aiobridge.AioThread.iterate`."""
    if not hasattr(source, "__aiter__"):
        hint = " (a sync iterable: iterate it directly)" if hasattr(source, "__iter__") else ""
        hint = contexts.refused_coroutine(source) or hint
        raise TypeError(
            f"AioThread.iterate() takes an async iterable or async generator, got "
            f"{describe(source)}{hint}"
        )
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
        raise ValueError(f"buffer must be an int >= 1, got {buffer!r}")
    portal.check_may_block("iterate")
    # The producer starts at the first next(), maybe after the caller's context has
    # moved on (a span ended, a request finished): it runs in the context of this call.
    context = contextvars.copy_context()
    return _consume(portal, _Channel(portal, source, buffer), portal.timeout(timeout), context)


def _consume(
    portal: Portal, channel: _Channel[T], timeout: float | None, context: contextvars.Context
) -> Generator[T, None, None]:
    future = context.run(portal.spawn, channel.produce())
    future.add_done_callback(channel.settled)
    try:
        while True:
            kind, value = channel.take(timeout)
            if kind == _ITEM:
                yield value
            elif kind == _END:
                return
            else:
                raise value
    finally:
        _close_channel(portal, channel)


def _close_channel(portal: Portal, channel: _Channel[Any]) -> None:
    if channel.finished.is_set():
        return
    with contextlib.suppress(RuntimeError):  # no loop, or closed: nothing to halt
        portal.send(channel.halt)
    if portal.on_loop_thread():
        return  # dropped on the loop thread itself: it cannot wait for itself
    if not channel.finished.wait(CLOSE_TIMEOUT):
        logger.warning(
            "aiobridge: the async iterator %r did not close within %s s",
            channel.source, CLOSE_TIMEOUT,
        )
