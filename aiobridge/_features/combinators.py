"""Coroutines that run several awaitables on the loop for gather/first/as_completed.

Each runs entirely on the loop thread and never leaves a child task behind:
whatever way it ends (result, error, cancellation), the children it started
are cancelled and awaited before it returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .._core.awaitables import close_awaitables, describe
from ..errors import BridgeTimeoutError

if TYPE_CHECKING:
    from .._core.portal import Portal
    from .._core.switch import Switch

__all__ = (
    "as_completed",
    "first",
    "first_of",
    "gather",
    "gather_all",
    "iterate_completed",
    "run_limited",
)

# How long closing an as_completed iterator waits for the cancelled rest to stop.
_CLOSE_WAIT = 5.0

T = TypeVar("T")


async def _cancel_and_wait(tasks: Sequence[asyncio.Future[Any]]) -> None:
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)


def _retrieve(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Mark every exception as seen so none is logged as 'never retrieved'."""
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()


async def gather_all(awaitables: Sequence[Awaitable[T]], return_exceptions: bool) -> list[Any]:
    """Results in order; on the first error the others are cancelled (unless
    ``return_exceptions``) and that error is raised."""
    tasks = [asyncio.ensure_future(aw) for aw in awaitables]
    try:
        if return_exceptions:
            return list(await asyncio.gather(*tasks, return_exceptions=True))
        pending: set[asyncio.Future[Any]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
                if task.cancelled():
                    raise asyncio.CancelledError()
        return [task.result() for task in tasks]
    finally:
        await _cancel_and_wait(tasks)
        _retrieve(tasks)


async def first_of(awaitables: Sequence[Awaitable[T]]) -> T:
    """The first successful result; the others are cancelled.

    If every awaitable fails, the earliest failure is raised, with a note
    naming the others.
    """
    tasks = [asyncio.ensure_future(aw) for aw in awaitables]
    order: dict[asyncio.Future[T], int] = {task: index for index, task in enumerate(tasks)}
    failures: list[BaseException] = []
    try:
        pending: set[asyncio.Future[T]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=order.__getitem__):
                if task.cancelled():
                    failures.append(asyncio.CancelledError())
                elif task.exception() is None:
                    return task.result()
                else:
                    failures.append(task.exception())  # type: ignore[arg-type]
        error = failures[0]
        if len(failures) > 1:
            others = ", ".join(repr(f) for f in failures[1:])
            error.add_note(f"all {len(failures)} awaitables failed; the others raised: {others}")
        raise error
    finally:
        await _cancel_and_wait(tasks)
        _retrieve(tasks)


async def run_limited(
    awaitables: Sequence[Awaitable[T]],
    limit: int,
    deliver: Callable[[bool, Any], None],
) -> None:
    """Run the awaitables with at most ``limit`` in flight, delivering each
    outcome as ``deliver(ok, value_or_exception)`` as soon as it finishes."""
    queue = list(reversed(awaitables))
    running: set[asyncio.Future[T]] = set()
    started: list[asyncio.Future[T]] = []
    try:
        while queue or running:
            while queue and len(running) < limit:
                started_task = asyncio.ensure_future(queue.pop())
                running.add(started_task)
                started.append(started_task)
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.cancelled():
                    deliver(False, asyncio.CancelledError())
                elif task.exception() is not None:
                    deliver(False, task.exception())
                else:
                    deliver(True, task.result())
    finally:
        await _cancel_and_wait(started)
        _retrieve(started)
        for leftover in queue:  # never started: close so they do not warn
            if asyncio.iscoroutine(leftover):
                leftover.close()


def iterate_completed(
    submit: Callable[[Coroutine[Any, Any, None]], concurrent.futures.Future[None]],
    items: list[Awaitable[T]],
    limit: int,
    wait: float | None,
    switch_here: Callable[[], Switch | None],
) -> Iterator[T]:
    """The caller's side of ``AioThread.as_completed``: results as they arrive.

    ``run_limited`` runs on the loop (through ``submit``) and drops each outcome
    into a queue the generator returned here takes them out of: a thread-safe
    queue a thread blocks on, or, for a request greenlet on the loop's own
    thread (``aiobridge.onloop``: ``switch_here()`` is not None), an asyncio
    queue it awaits by switching. Closing the generator cancels the driver and
    waits (bounded) until the remaining awaitables have stopped.
    """
    switched = switch_here() is not None
    outcomes: queue.SimpleQueue[tuple[bool, Any]] | asyncio.Queue[tuple[bool, Any]]
    outcomes = asyncio.Queue() if switched else queue.SimpleQueue()
    finished = _Finished(switched)

    async def drive() -> None:
        try:
            await run_limited(items, limit, lambda ok, v: outcomes.put_nowait((ok, v)))
        finally:
            finished.set()

    try:
        future = submit(drive())
    except BaseException:
        close_awaitables(items)
        raise
    deadline = None if wait is None else time.monotonic() + wait

    def take(remaining: float | None) -> tuple[bool, Any]:
        if isinstance(outcomes, queue.SimpleQueue):
            return outcomes.get(timeout=remaining)
        if not outcomes.empty():
            return outcomes.get_nowait()
        switch = switch_here()
        assert switch is not None, "a request greenlet's as_completed() iterated elsewhere"
        try:
            return switch(_next_outcome(outcomes, remaining))  # type: ignore[no-any-return]
        except TimeoutError:
            raise queue.Empty from None
        except asyncio.CancelledError:  # the client went away
            raise concurrent.futures.CancelledError() from None

    def results() -> Iterator[T]:
        try:
            for _ in range(len(items)):
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    ok, value = take(remaining)
                except queue.Empty:
                    raise BridgeTimeoutError(
                        f"AioThread.as_completed() timed out after {wait} s; "
                        "the remaining awaitables were cancelled"
                    ) from None
                if not ok:
                    if isinstance(value, asyncio.CancelledError):
                        raise concurrent.futures.CancelledError()
                    raise value
                yield value
        finally:
            if not future.done():
                future.cancel()
                finished.wait(_CLOSE_WAIT, switch_here())

    return results()


async def _next_outcome(outcomes: asyncio.Queue[tuple[bool, Any]],
                        limit: float | None) -> tuple[bool, Any]:
    async with asyncio.timeout(limit):
        return await outcomes.get()


class _Finished:
    """Set on the loop when ``as_completed``'s driver has stopped; waited for by its
    caller: a thread blocks, a request greenlet switches, anything else on the loop
    thread cannot wait."""

    def __init__(self, switched: bool) -> None:
        self.event: threading.Event | asyncio.Event = (
            asyncio.Event() if switched else threading.Event())

    def set(self) -> None:
        self.event.set()

    def wait(self, limit: float, switch: Switch | None) -> None:
        event = self.event
        if isinstance(event, threading.Event):
            event.wait(limit)
        elif switch is not None and not event.is_set():
            # A client gone away refuses the wait at once: the driver still ends, unwaited.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                switch(_wait_event(event, limit))


async def _wait_event(event: asyncio.Event, limit: float) -> None:
    async with asyncio.timeout(limit):
        await event.wait()


# -- the thread side: the bodies of AioThread.gather, first and as_completed ------------
def gather(
    portal: Portal,
    awaitables: tuple[Awaitable[Any], ...],
    return_exceptions: bool,
    timeout: float | None,
) -> list[Any]:
    """The implementation of :meth:`aiobridge.AioThread.gather`: one hand-off for all."""
    items = portal.check_all(awaitables, "AioThread.gather()")
    return _run_group(portal, gather_all(items, return_exceptions), items, timeout)


def first(portal: Portal, awaitables: tuple[Awaitable[T], ...], timeout: float | None) -> T:
    """The implementation of :meth:`aiobridge.AioThread.first`."""
    items = portal.check_all(awaitables, "AioThread.first()")
    if not items:
        raise ValueError("AioThread.first() needs at least one awaitable")
    return _run_group(portal, first_of(items), items, timeout)


def _run_group(
    portal: Portal, driver: Awaitable[T], items: list[Awaitable[Any]], timeout: float | None
) -> T:
    try:
        return portal.run(driver, timeout)
    except BaseException:
        # If the driver never ran, its awaitables were never awaited: close them.
        # Closing a finished coroutine is a no-op, so this is safe either way.
        close_awaitables(items)
        raise


def as_completed(
    portal: Portal,
    awaitables: Iterable[Awaitable[T]],
    limit: int | None,
    timeout: float | None,
) -> Iterator[T]:
    """The implementation of :meth:`aiobridge.AioThread.as_completed`."""
    if isinstance(awaitables, (str, bytes)) or not isinstance(awaitables, Iterable):
        close_awaitables((awaitables,))
        raise TypeError(
            "AioThread.as_completed() takes one iterable of awaitables, got "
            f"{describe(awaitables)}; pass a list: as_completed([a, b])"
        )
    items = portal.check_all(tuple(awaitables), "AioThread.as_completed()")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        close_awaitables(items)
        raise ValueError(f"limit must be an int >= 1 or None, got {limit!r}")
    try:
        portal.check_may_block("as_completed")
        wait = portal.timeout(timeout)
    except BaseException:
        close_awaitables(items)
        raise

    def submit(coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        return portal.submit(coro, None, spawned=False, where="AioThread.as_completed()")

    return iterate_completed(submit, items, limit or max(1, len(items)), wait,
                             portal.switch_here)
