"""Coroutines that run several awaitables on the loop for gather/first/as_completed.

Each runs entirely on the loop thread and never leaves a child task behind:
whatever way it ends (result, error, cancellation), the children it started
are cancelled and awaited before it returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

__all__ = ("first_of", "gather_all", "run_limited")

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
