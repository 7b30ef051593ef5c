"""Loop-bound shared objects: built once on the bridge's loop, closed newest first.

An ``aiohttp.ClientSession`` or a ``redis.asyncio`` pool belongs to the event
loop it was created on. A :class:`Resource` builds such an object lazily on the
bridge's loop, hands the same object to every caller (coroutines with
``await res.get()``, threads with ``res.get_sync()``) and closes it when the
bridge stops. Life of one resource::

    registered ──first get()──▶ building ──▶ built ──bridge.stop()──▶ closed
        ▲                          │ factory raised: the next get() tries again
        └──── os.fork() ───────────┘ (the child builds its own on its own loop)
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from .._core import fork as _fork
from .._core.awaitables import close_awaitables, describe
from ..errors import BridgeDeadlockError, BridgeError

if TYPE_CHECKING:
    from .._core.portal import Portal

__all__ = ("Resource", "keep_after_fork")

T = TypeVar("T")

_get_running_loop = asyncio._get_running_loop
_getpid = os.getpid


def keep_after_fork(obj: object) -> None:
    """Keep an object inherited from the parent process alive, untouched.

    Finalising it would close (or, for TLS, even write to) sockets that still
    belong to the parent; see :mod:`aiobridge._core.fork`.
    """
    _fork.keep(obj)


class _Built(NamedTuple, Generic[T]):
    """A built object and where it lives; replaced as a whole, so reads are atomic."""

    value: T
    loop: asyncio.AbstractEventLoop
    pid: int


class Resource(Generic[T]):
    """A loop-bound object shared by every caller of one bridge.

    Made by :meth:`aiobridge.AioThread.resource`, not directly. The factory runs
    on the bridge's loop the first time the object is needed, exactly once even
    when many threads and coroutines ask for it at the same moment; a factory
    that raises is tried again by the next caller. At ``bridge.stop()`` built
    resources are closed in reverse order of creation, after in-flight calls
    have finished: with ``close(obj)`` if given, else ``await obj.aclose()``,
    else ``obj.close()`` (awaited if it returns an awaitable). In a forked
    child the parent's object is left alone and a new one is built on the
    child's loop.

    Example:
        >>> from aiobridge.clients import http_session
        >>> http = bridge.resource(http_session())
        >>> async def fetch(url: str) -> bytes:
        ...     session = await http.get()
        ...     async with session.get(url) as response:
        ...         return await response.read()
        >>> bridge.run(fetch(f"{upstream_url}/health"))
        b'ok'

    Thread safety:
        ``get_sync()`` may be called from any thread that is not running an
        event loop; ``get()`` only from coroutines running on the bridge.
        The built object itself must only be used on the bridge's loop.

    Cancellation:
        A caller cancelled (or timed out) while the object is being built
        stops waiting, but the build goes on for the other callers.
    """

    def __init__(
        self,
        portal: Portal,
        factory: Callable[[], Awaitable[T]] | Callable[[], T],
        close: Callable[[T], Any] | None = None,
    ) -> None:
        if inspect.isawaitable(factory):
            close_awaitables((factory,))
            raise TypeError(
                f"AioThread.resource() takes a factory, not an awaitable; got {describe(factory)}: "
                "pass the function itself, e.g. bridge.resource(make_client), not make_client()"
            )
        if not callable(factory):
            raise TypeError(
                f"AioThread.resource() takes a factory (a callable or an async function), "
                f"got {describe(factory)}"
            )
        if close is not None and not callable(close):
            raise TypeError(f"close must be a callable or None, got {describe(close)}")
        self._portal = portal
        self._factory = factory
        self._close = close
        self._built: _Built[T] | None = None
        self._building: asyncio.Task[T] | None = None
        self.name = getattr(factory, "__qualname__", None) or type(factory).__name__

    def __repr__(self) -> str:
        state = "built" if self._built is not None else "not built"
        return f"<Resource {self.name!r} of bridge {self._portal.name!r}, {state}>"

    @property
    def built(self) -> bool:
        """True while an object built in this process is live (until stop)."""
        built = self._built
        return built is not None and built.pid == _getpid()

    async def get(self) -> T:
        """Return the shared object, building it on first use.

        Must be awaited in a coroutine running on the bridge (``bridge.run``,
        ``bridge.submit``, a Flask async view under the extension...).

        Raises:
            BridgeError: awaited on another event loop than the bridge's.
            Exception: whatever the factory raised (the next call tries again).
        """
        loop = asyncio.get_running_loop()
        built = self._built
        if built is not None and built.loop is loop:
            return built.value
        self._check_loop(loop)
        task = self._building
        if task is None or task.get_loop() is not loop:
            if task is not None:
                keep_after_fork(task)  # a build that was running when the process forked
            if built is not None:
                keep_after_fork(built)
                self._built = None
            task = self._building = loop.create_task(self._build(loop))
            # If the bridge stops mid-build, the build is cancelled before the loop closes.
            self._portal.add_closer(self._cancel_build)
        # A cancelled caller must not cancel the build the others wait for.
        return await asyncio.shield(task)

    def get_sync(self, *, timeout: float | None = None) -> T:
        """Return the shared object from a thread, building it on first use.

        Args:
            timeout: seconds to wait for the build (default: the bridge's
                ``default_timeout``).

        Raises:
            BridgeError: called from a thread running another event loop; the
                object belongs to the bridge's loop and must not be used there.
            BridgeDeadlockError: called on the bridge's loop thread before the
                object was built (await ``res.get()`` there instead).
            BridgeClosedError: the bridge is stopping or stopped.
        """
        built = self._built
        running = _get_running_loop()
        if built is not None and built.pid == _getpid() and running is built.loop:
            return built.value  # on the loop thread itself: harmless once built
        if running is not None:
            if self._portal.owns_loop(running):
                raise BridgeDeadlockError(
                    f"{self!r}: get_sync() on the bridge's own loop thread would wait for "
                    "itself; use 'await resource.get()' in the coroutine"
                )
            raise self._foreign_loop_error()
        if built is not None and built.pid == _getpid() and self._portal.running:
            return built.value
        return self._portal.run(self.get(), timeout)

    # -- loop side ----------------------------------------------------------------
    def _check_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._portal.owns_loop(loop):
            raise self._foreign_loop_error()

    def _foreign_loop_error(self) -> BridgeError:
        return BridgeError(
            f"resource {self.name!r} belongs to bridge {self._portal.name!r} and can only be "
            "used on that bridge's event loop, but it was requested from another event "
            "loop; run the coroutine on the bridge (bridge.run(...) or bridge.submit(...)) "
            "instead of asyncio.run() or a loop of your own"
        )

    async def _build(self, loop: asyncio.AbstractEventLoop) -> T:
        try:
            value = self._factory()
            if inspect.iscoroutine(value) or isinstance(value, asyncio.Future):
                value = await value
            built: _Built[T] = _Built(value, loop, _getpid())  # type: ignore[arg-type]
            self._built = built
            self._portal.add_closer(lambda: self._close_built(built))
            return built.value
        finally:
            if self._building is asyncio.current_task():
                self._building = None
                self._portal.remove_closer(self._cancel_build)

    async def _cancel_build(self) -> None:
        task = self._building
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the stopping bridge has no one left to tell

    async def _close_built(self, built: _Built[T]) -> None:
        if self._built is built:
            self._built = None
        value = built.value
        if self._close is not None:
            result = self._close(value)
        else:
            closer = getattr(value, "aclose", None)
            if closer is None:
                closer = getattr(value, "close", None)
            result = closer() if callable(closer) else None
        if inspect.isawaitable(result):
            await result
