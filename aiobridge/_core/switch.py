"""Calls made on an adopted loop's own thread, from a request greenlet: a switch, not a hand-off.

When a bridge *adopts* the loop of an ASGI server (``aiobridge.onloop``), the
server's thread runs each request's WSGI app in a greenlet of its own. A
bridged call made there cannot block (it would block the loop that must run
it); it *switches* instead: the request greenlet gives the awaitable to the
greenlet that drives it (inside the request's asyncio task on the loop), which
awaits it and switches back with the result or the exception.

The core knows nothing of greenlets (``greenlet`` is an extra): the on-loop
package registers a :class:`Switcher`, and :meth:`.Portal.run` consults it only
when it is called on the loop thread itself, so a call from any other thread
pays nothing for it.

This module runs one switched call with the same contract as a handed-off one:
counted in the stats and told to the observer, bounded by its timeout (which
cancels it on the loop), cancelled as ``concurrent.futures.CancelledError``,
its exception raised with its own type and traceback, and bounded by
``max_in_flight``: a switched call holds a slot while it runs, and one made
when every slot is taken (or calls already wait for one) joins the
dispatcher's queue as a call of its own, in order with the calls of threads,
its timeout running while it waits; the request greenlet waits for it by
switching, and gets its context changes back as from ``run()`` in a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import BridgeClosedError, BridgeTimeoutError
from .awaitables import close_unstarted
from .calls import FutureCall
from .context import copy_back

if TYPE_CHECKING:
    from .loop_thread import LoopThread
    from .observers import Outcome

__all__ = ("Switch", "Switcher", "label_of_running", "register", "run_switched", "switch_here")

T = TypeVar("T")

#: Suspends the current request greenlet until the loop has awaited the awaitable;
#: returns its result or raises its exception.
Switch = Callable[[Awaitable[Any]], Any]

_clock = time.perf_counter


class Switcher(Protocol):
    """What the on-loop package tells the core (registered with :func:`register`)."""

    def current(self) -> Switch | None:
        """The switch of the running request greenlet; None outside of one."""

    def running(self, thread_ident: int) -> str | None:
        """What the thread ``thread_ident`` serves now (e.g. ``"GET /report"``), if anything.

        Called by the watchdog's thread when the loop stalls.
        """


_switcher: Switcher | None = None


def register(switcher: Switcher | None) -> None:
    """Install the process's switcher (the on-loop package does, once); None removes it."""
    global _switcher
    _switcher = switcher


def switch_here() -> Switch | None:
    """The switch of the current request greenlet, if the caller is one."""
    switcher = _switcher
    return None if switcher is None else switcher.current()


def label_of_running(thread_ident: int) -> str | None:
    """What the loop thread ``thread_ident`` serves now, for the watchdog's report."""
    switcher = _switcher
    if switcher is None:
        return None
    try:
        return switcher.running(thread_ident)
    except Exception:  # a label is a nicety: never let it stop the watchdog
        return None


async def _within(awaitable: Awaitable[T], wait: float) -> T:
    timeout = asyncio.timeout(wait)
    try:
        async with timeout:
            return await awaitable
    except TimeoutError:
        if not timeout.expired():
            raise  # the awaitable's own TimeoutError
        raise BridgeTimeoutError(
            f"AioThread.run() timed out after {wait} s; the task was cancelled on the loop"
        ) from None


def run_switched(
    switch: Switch,
    awaitable: Awaitable[T],
    wait: float | None,
    owner: LoopThread,
) -> T:
    """Run ``awaitable`` through ``switch`` (on the loop thread, in a request greenlet)."""
    counters, observer, dispatcher = owner.counters, owner.observer, owner.dispatcher
    assert dispatcher is not None
    limit = dispatcher.max_in_flight
    if limit is not None and (counters.in_flight >= limit or dispatcher.waiting):
        return _run_queued(owner, awaitable, wait)
    counters.submitted += 1
    counters.in_flight += 1
    began = 0.0 if observer is None else _clock()
    outcome: Outcome = "completed"
    try:
        value: T = switch(awaitable if wait is None else _within(awaitable, wait))
    except asyncio.CancelledError:
        counters.cancelled += 1
        outcome = "cancelled"
        close_unstarted(awaitable)  # refused before it began (its client went away)
        raise concurrent.futures.CancelledError() from None
    except BridgeTimeoutError:
        counters.cancelled += 1
        counters.timed_out += 1
        outcome = "timed_out"
        raise
    except BaseException:
        counters.failed += 1
        outcome = "failed"
        raise
    finally:
        counters.in_flight -= 1
        if observer is not None:
            observer.finished(outcome, _clock() - began)
        if dispatcher.waiting:
            dispatcher.slot_freed()
    counters.completed += 1
    return value


def _run_queued(owner: LoopThread, awaitable: Awaitable[T], wait: float | None) -> T:
    """Every ``max_in_flight`` slot is taken: wait in the dispatcher's queue, by switching."""
    context = contextvars.copy_context()
    call: FutureCall[T] = FutureCall(awaitable, context, wait)
    future = call.future = SwitchingFuture()
    inbox = owner.inbox

    def propagate_cancel(done: concurrent.futures.Future[T]) -> None:
        if done.cancelled():  # the request's client went away while it waited
            inbox.request_cancel(call)

    future.add_done_callback(propagate_cancel)
    try:
        inbox.hand_off(call)
    except BridgeClosedError:
        close_unstarted(awaitable)  # never reached the loop
        raise
    try:
        return future.result()
    finally:
        copy_back(context)  # what the call set, seen afterwards as with await


class SwitchingFuture(concurrent.futures.Future[T]):
    """The future of a ``submit()`` made in a request greenlet.

    Waiting for it there (``result()``, ``exception()``) switches to the loop
    instead of blocking the thread the loop runs on; elsewhere it is a plain
    :class:`concurrent.futures.Future`. ``concurrent.futures.wait()`` and
    ``as_completed()`` still block: in a request greenlet use
    ``bridge.gather()`` or ``bridge.as_completed()`` instead.
    """

    def result(self, timeout: float | None = None) -> T:
        if not self.done() and _wait_switched(self, timeout):
            return super().result(0)
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self.done() and _wait_switched(self, timeout):
            return super().exception(0)
        return super().exception(timeout)


def _wait_switched(future: concurrent.futures.Future[Any], timeout: float | None) -> bool:
    """Wait for ``future`` by switching, if in a request greenlet; False if not in one."""
    switch = switch_here()
    if switch is None:
        return False
    try:
        switch(_settled(future, timeout))
    except asyncio.CancelledError:  # the request ended (client gone): cancel what it waited on
        future.cancel()
        raise concurrent.futures.CancelledError() from None
    return True


async def _settled(future: concurrent.futures.Future[Any], limit: float | None) -> None:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def settled(_: concurrent.futures.Future[Any]) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, waiter)

    future.add_done_callback(settled)
    async with asyncio.timeout(limit):
        await waiter


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
