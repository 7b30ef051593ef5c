"""Awaitables as the bridge sees them: checks with clear errors, closing what never ran,
and the chain of coroutines a task is suspended in (read by cancellation and the
pytest plugin)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import types
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any

__all__ = ("await_chain", "check_awaitable", "close_awaitables", "close_unstarted", "code_of",
           "describe", "location")


def describe(obj: object) -> str:
    """A short, human description of ``obj`` for error messages."""
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    kind = type(obj).__name__
    return f"{kind} {name!s}" if name else f"{kind} {obj!r:.60}"


def check_awaitable(obj: object, where: str) -> None:
    """Raise ``TypeError`` naming the mistake unless ``obj`` can be awaited.

    Args:
        obj: what the caller passed.
        where: the method name, e.g. ``"AioThread.run()"``, for the message.
    """
    if inspect.isawaitable(obj):
        return
    if obj is None:
        hint = "got None; did you call a regular function instead of a coroutine function?"
    elif inspect.iscoroutinefunction(obj):
        hint = (
            f"got the coroutine function {getattr(obj, '__qualname__', obj)!s}, not a coroutine; "
            "call it first: run(func(...)), not run(func)"
        )
    elif inspect.isasyncgen(obj) or inspect.isasyncgenfunction(obj):
        hint = f"got an async generator ({describe(obj)}); use bridge.iterate() to consume it"
    elif isinstance(obj, concurrent.futures.Future):
        hint = (
            "got a concurrent.futures.Future; call its .result() directly, "
            "or wrap it with asyncio.wrap_future() inside a coroutine"
        )
    elif hasattr(obj, "__aenter__"):
        hint = f"got an async context manager ({describe(obj)}); use bridge.enter()"
    else:
        hint = f"got {describe(obj)}, which is not awaitable"
    raise TypeError(
        f"{where} expects a coroutine or another awaitable (Task, Future, object with "
        f"__await__); {hint}"
    )


def close_awaitables(items: Iterable[Any], *, cancel_futures: bool = True) -> None:
    """Close coroutines that will never run, so they never warn "was never awaited".

    Args:
        items: the awaitables refused or abandoned.
        cancel_futures: also cancel the asyncio futures among them (a caller's
            refused call); the loop side passes False and leaves them alone.
    """
    for item in items:
        if inspect.iscoroutine(item):
            item.close()
        elif cancel_futures and isinstance(item, asyncio.Future) and not item.done():
            loop = item.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(item.cancel)


def close_unstarted(awaitable: object) -> None:
    """Close ``awaitable`` if it is a coroutine that never began (a wait refused or cancelled
    before it started), so it never warns "was never awaited"; anything else is left alone."""
    if inspect.iscoroutine(awaitable) and \
            inspect.getcoroutinestate(awaitable) == inspect.CORO_CREATED:
        awaitable.close()


def await_chain(awaitable: object) -> Iterator[tuple[object, types.FrameType | None]]:
    """Each coroutine or generator ``awaitable`` waits through, outermost first, with its frame.

    The last item is the innermost object waited on (a future, or a finished
    coroutine whose frame is None).
    """
    current: object = awaitable
    while current is not None:
        frame = getattr(current, "cr_frame", None) or getattr(current, "gi_frame", None)
        yield current, frame
        current = getattr(current, "cr_await", None) or getattr(current, "gi_yieldfrom", None)


def code_of(awaitable: object) -> types.CodeType | None:
    """The code object of a coroutine or generator, else None."""
    return getattr(awaitable, "cr_code", None) or getattr(awaitable, "gi_code", None)


def location(awaitable: Awaitable[Any]) -> str:
    """Where an awaitable comes from: ``qualname (file:line)`` of its code, or its type."""
    code = code_of(awaitable)
    if code is not None:
        return f"{code.co_qualname} ({code.co_filename}:{code.co_firstlineno})"
    kind = type(awaitable)
    return f"{kind.__module__}.{kind.__qualname__}"
