"""Checks that turn common mistakes with awaitables into clear ``TypeError``\\ s."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Iterable
from typing import Any

__all__ = ("check_awaitable", "close_awaitables", "describe")


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


def close_awaitables(items: Iterable[Any]) -> None:
    """Close refused coroutines so they never warn "coroutine ... was never awaited"."""
    for item in items:
        if inspect.iscoroutine(item):
            item.close()
        elif isinstance(item, asyncio.Future) and not item.done():
            loop = item.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(item.cancel)
