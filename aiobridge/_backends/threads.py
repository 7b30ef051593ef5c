"""The standard backend: the loop thread's OS thread, locks, selector and executor.

:class:`OsThreads` takes them straight from the standard library. The gevent
backend (:mod:`.gevent`) subclasses it; :func:`aiobridge._backends.threads_for_this_process`
chooses between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Protocol

__all__ = ("NativeLock", "OsThreads")


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


class OsThreads:
    """OS threads, locks, selector and executor straight from the standard library."""

    def __init__(self) -> None:
        #: Makes the lock a blocking caller sleeps on until the loop releases it.
        self.caller_lock: Callable[[], NativeLock] = threading.Lock
        #: Wraps a caller's wait on a ``threading`` condition that the loop thread ends.
        self.waiting_for_loop: Callable[[], AbstractContextManager[None]] = (
            contextlib.nullcontext
        )

    def submit_keepalive(self) -> Callable[[], None] | None:
        """Something to run once a ``submit()`` call is settled, made when it is handed off.

        Nothing here; the gevent backend keeps the caller's hub running until then.
        """
        return None

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
