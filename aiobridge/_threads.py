"""Where the loop thread gets its OS thread, its selector and its executor.

:class:`PlainThreads` is the ordinary ``threading`` way. Under gevent's
monkeypatching those same names make greenlets on gevent's hub instead of OS
threads, so :func:`for_this_process` picks :class:`aiobridge._gevent.GeventThreads`,
which asks gevent for the unpatched originals. The choice is made when a loop
thread starts, so a process patched after ``import aiobridge`` (gunicorn
``--preload``, then ``-k gevent``) still gets the right one.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Protocol

from ._calls import FutureCall

__all__ = ("NativeLock", "PlainThreads", "for_this_process")


class NativeLock(Protocol):
    """The subset of a lock the loop thread and its watchdog use to signal each other."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...
    def locked(self) -> bool: ...
    def __enter__(self) -> bool: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None: ...


class PlainThreads:
    """OS threads, locks, selector and executor straight from the standard library."""

    #: True when the process is monkeypatched by gevent.
    gevent = False

    def __init__(self) -> None:
        #: Makes the lock a blocking caller sleeps on until the loop releases it.
        self.caller_lock: Callable[[], NativeLock] = threading.Lock
        #: The class of the calls behind ``submit()``.
        self.future_call: type[FutureCall[Any]] = FutureCall
        #: Wraps a wait on a ``threading`` condition that the loop thread ends.
        self.hold_hub: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext

    def start_thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Start ``target`` in a daemon OS thread called ``name``."""
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def native_lock(self) -> NativeLock:
        """A lock that blocks the OS thread (for loop thread <-> watchdog signals)."""
        return threading.Lock()

    def os_thread_ident(self) -> int:
        """The current OS thread's ident, the key of ``sys._current_frames()``."""
        return threading.get_ident()

    def selector_class(self) -> type[selectors.BaseSelector]:
        """The selector class the loop waits in."""
        return selectors.DefaultSelector

    def new_loop(self, selector: selectors.BaseSelector) -> asyncio.AbstractEventLoop:
        """A selector event loop waiting in ``selector``."""
        return asyncio.SelectorEventLoop(selector)

    def prepare(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        """Adapt a new loop (from ``new_loop`` or the user's factory) of thread ``name``."""

    async def shutdown_executor(self, loop: asyncio.AbstractEventLoop) -> None:
        """Shut down the loop's default executor (``run_in_executor``, ``to_thread``)."""
        await loop.shutdown_default_executor()


def for_this_process() -> PlainThreads:
    """The threads provider for a loop thread starting now in this process."""
    from . import _gevent

    if _gevent.active():
        return _gevent.GeventThreads()
    return PlainThreads()
