"""``AioThread``: the synchronous face of one long-lived event loop, and the process default."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import AsyncIterable, Awaitable, Callable, Generator, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, ParamSpec, TypeVar, overload

import janus

from ._core.fork import process_lock
from ._core.observers import BridgeStats
from ._core.portal import Portal, check_timeout
from ._core.state import State
from ._features import combinators as _combinators
from ._features import queues as _queues
from ._features import streams as _streams
from ._features.resources import Resource
from .errors import BridgeDeadlockError

__all__ = ("AioThread", "default_bridge", "run")

T = TypeVar("T")
P = ParamSpec("P")



class AioThread:
    """One event loop in a daemon thread, shared by every thread of the process.

    Any thread hands it coroutines and blocks only on its own result. Loop-bound
    clients (an ``aiohttp.ClientSession``, a ``redis.asyncio`` pool) live on
    this loop for the life of the bridge and are shared by all callers.

    Args:
        name: name of the loop thread.
        loop_factory: makes the event loop, e.g. ``uvloop.new_event_loop``.
        debug: run the loop in asyncio debug mode; ``None`` (the default)
            follows the interpreter, as ``asyncio.run`` does: on under
            ``python -X dev`` or with ``PYTHONASYNCIODEBUG`` set.
        slow_callback_duration: seconds a callback may hold the loop before it
            is counted and logged (with its location) as slow.
        default_timeout: timeout in seconds applied when a call passes none.
        max_in_flight: at most this many calls run on the loop at once; further
            callers wait in order (their timeout still runs).

    The bridge starts on first use (or with :meth:`start`); :meth:`stop` is final.
    After ``os.fork()`` the child's copy starts a fresh loop thread on first use.

    Example:
        >>> import asyncio
        >>> from aiobridge import AioThread
        >>> async def add(a, b):
        ...     await asyncio.sleep(0)
        ...     return a + b
        >>> with AioThread() as bridge:
        ...     bridge.run(add(1, 2))
        3

    Thread safety:
        Every method may be called from any thread, concurrently.
    """

    def __init__(
        self,
        *,
        name: str = "aiobridge",
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        debug: bool | None = None,
        slow_callback_duration: float = 0.1,
        default_timeout: float | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        self._portal = Portal.create(
            name, loop_factory, debug, slow_callback_duration, default_timeout, max_in_flight
        )

    def __repr__(self) -> str:
        return f"<AioThread {self._portal.name!r} {self._portal.state.value}>"

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> AioThread:
        """Start the loop thread and return once it accepts work. Idempotent.

        Raises:
            BridgeClosedError: the bridge was stopped.
        """
        self._portal.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop gracefully. Idempotent.

        New work is refused at once with :class:`BridgeClosedError`. Calls
        already accepted and spawned tasks get up to ``timeout`` seconds to
        finish; the rest are cancelled (their callers get
        ``concurrent.futures.CancelledError``), as is every other task on the
        loop, as ``asyncio.run`` does; all get 2 s for their cleanup (a task
        that swallows cancellation is re-cancelled, then abandoned with a
        warning). Then queues and resources are closed (newest first), async
        generators and the default executor shut down, the thread joined.

        Raises:
            BridgeDeadlockError: called from the loop thread itself.
        """
        check_timeout(timeout, "timeout")
        if self._portal.stopping_would_deadlock():
            hint = ("await bridge.astop() in a coroutine on it (the ASGI lifespan shutdown)"
                    if self._portal.adopted else "call it from another thread")
            raise BridgeDeadlockError(
                "AioThread.stop() was called from the bridge's own loop thread, where it "
                f"would wait for itself; {hint}"
            )
        self._portal.stop(timeout)

    def adopt(self) -> AioThread:
        """Run on the event loop running in this thread (a server's) instead of starting one.

        Call it from a coroutine on that loop, before the bridge's first use
        (an ASGI lifespan startup: :func:`aiobridge.onloop.on_loop` does). The
        process still has one loop: resources bind to it, calls from other
        threads reach it through the usual thread-safe hand-off, and calls made
        on its own thread from a request greenlet switch to it. Stop it with
        :meth:`astop`; the loop itself is never stopped or closed by the bridge.
        Idempotent on the same loop.

        Raises:
            RuntimeError: no event loop runs in this thread.
            BridgeError: the bridge already runs (its own thread) or was stopped.

        Example:
            >>> async def lifespan_startup(bridge):
            ...     bridge.adopt()
            >>> async def lifespan_shutdown(bridge):
            ...     await bridge.astop()
        """
        self._portal.adopt()
        return self

    async def astop(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (as stop())
        """Stop a bridge that adopted the running loop, from a coroutine on that loop.

        As :meth:`stop`: new work is refused, calls and spawned tasks get
        ``timeout`` seconds, then the tasks the bridge owns are cancelled and
        its queues and resources closed. The loop, its other tasks, its async
        generators and its executor belong to the server and are left running.
        Returns once stopped (also if another caller began the stop).
        """
        check_timeout(timeout, "timeout")
        await self._portal.stop_adopted(timeout)

    def __enter__(self) -> AioThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The bridge's event loop (starts the bridge if needed)."""
        self._portal.ensure_running()
        loop = self._portal.loop
        assert loop is not None
        return loop

    @property
    def thread(self) -> threading.Thread | None:
        """The loop thread, or None before start."""
        return self._portal.thread

    @property
    def running(self) -> bool:
        """True while the loop thread accepts work in this process."""
        return self._portal.running

    @property
    def name(self) -> str:
        """The loop thread's name."""
        return self._portal.name

    # -- calls ---------------------------------------------------------------------
    def run(self, awaitable: Awaitable[T], *, timeout: float | None = None) -> T:
        """Run ``awaitable`` on the loop and block until its result.

        Args:
            awaitable: a coroutine, Task, Future or any object with ``__await__``.
            timeout: seconds to wait (default: the bridge's ``default_timeout``).

        Returns:
            The awaitable's result.

        Raises:
            TypeError: ``awaitable`` is not awaitable (e.g. a coroutine function).
            BridgeTimeoutError: the timeout expired (also ``TimeoutError``); the
                task on the loop is cancelled.
            BridgeDeadlockError: called from the loop thread or from a thread
                running another event loop.
            BridgeClosedError: the bridge is stopping or stopped.
            concurrent.futures.CancelledError: the task was cancelled on the loop.
            Exception: whatever the awaitable raised, with its traceback.

        Cancellation:
            A timeout, or a ``KeyboardInterrupt`` while waiting, cancels the task
            on the loop; the interrupt is then re-raised.

        Context:
            What the awaitable sets in context variables is visible to the
            caller once ``run`` returns or raises, as after ``await``.

        Example:
            >>> async def add(a, b):
            ...     return a + b
            >>> bridge.run(add(1, 2), timeout=2.0)
            3
        """
        return self._portal.run(awaitable, timeout)

    def submit(
        self, awaitable: Awaitable[T], *, timeout: float | None = None
    ) -> concurrent.futures.Future[T]:
        """Schedule ``awaitable`` on the loop and return a future of its result.

        Non-blocking, so it may also be called from the loop thread.

        Args:
            awaitable: a coroutine or another awaitable.
            timeout: seconds after which the task is cancelled on the loop and
                the future raises :class:`BridgeTimeoutError` (default:
                ``default_timeout``).

        Cancellation:
            ``future.cancel()`` cancels the task on the loop.

        Context:
            Like ``asyncio.create_task``: the task starts with a copy of the
            caller's context variables, and what it sets stays in the task.

        Example:
            >>> future = bridge.submit(asyncio.sleep(0.01, result="done"))
            >>> future.result(timeout=5)
            'done'
        """
        return self._portal.submit(awaitable, timeout, spawned=False, where="AioThread.submit()")

    def spawn(self, awaitable: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Start a tracked background task and return its future.

        Unlike :meth:`submit`, a spawned task has no timeout, ignores
        ``max_in_flight`` and logs its failure (on the ``aiobridge`` logger);
        ``stop()`` waits for it within its drain period. As with ``submit``,
        context variables it sets stay in the task.

        Example:
            >>> refreshed = []
            >>> async def refresh_cache():
            ...     refreshed.append(True)
            >>> bridge.spawn(refresh_cache()).result(timeout=5)
            >>> refreshed
            [True]
        """
        return self._portal.spawn(awaitable)

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run the plain callback ``fn(*args)`` on the loop thread, soon. Non-blocking.

        The caller's context variables are visible to the callback.

        Example:
            >>> import threading
            >>> event = threading.Event()
            >>> bridge.call_soon(event.set)
            >>> event.wait(5)
            True
        """
        self._portal.call_soon(fn, args)

    @overload
    def wrap(
        self, async_fn: Callable[P, Awaitable[T]], *, timeout: float | None = None
    ) -> Callable[P, T]: ...

    @overload
    def wrap(
        self, async_fn: None = None, *, timeout: float | None = None
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, T]]: ...

    def wrap(
        self, async_fn: Callable[P, Awaitable[T]] | None = None, *, timeout: float | None = None
    ) -> Callable[P, T] | Callable[[Callable[P, Awaitable[T]]], Callable[P, T]]:
        """Turn an async function into a blocking one that runs on the bridge.

        Keeps the name, docstring and signature. Usable as ``@bridge.wrap`` or
        ``@bridge.wrap(timeout=2.0)``.

        Example:
            >>> @bridge.wrap
            ... async def fetch_user(user_id: int) -> dict:
            ...     return {"id": user_id}
            >>> fetch_user(42)
            {'id': 42}
        """
        check_timeout(timeout, "timeout")
        if async_fn is None:
            return functools.partial(self._portal.blocking, timeout=timeout)
        return self._portal.blocking(async_fn, timeout)

    # -- several awaitables ----------------------------------------------------------
    def gather(
        self,
        *awaitables: Awaitable[Any],
        return_exceptions: bool = False,
        timeout: float | None = None,
    ) -> list[Any]:
        """Run the awaitables concurrently on the loop; return their results in order.

        One hand-off for the whole group. Unless ``return_exceptions`` is true,
        the first failure cancels the others and is raised with its own type.

        Example:
            >>> async def get_user(uid):
            ...     return {"id": uid}
            >>> async def get_orders(uid):
            ...     return [f"order-{uid}"]
            >>> bridge.gather(get_user(1), get_orders(1))
            [{'id': 1}, ['order-1']]
        """
        return _combinators.gather(self._portal, awaitables, return_exceptions, timeout)

    def first(self, *awaitables: Awaitable[T], timeout: float | None = None) -> T:
        """Return the first successful result; the other awaitables are cancelled.

        If all fail, the earliest failure is raised (a note lists the others).

        Example:
            >>> async def mirror(name, delay):
            ...     await asyncio.sleep(delay)
            ...     return name
            >>> bridge.first(mirror("slow", 5), mirror("fast", 0))
            'fast'
        """
        return _combinators.first(self._portal, awaitables, timeout)

    def as_completed(
        self,
        awaitables: Iterable[Awaitable[T]],
        *,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[T]:
        """Yield results as they finish, with at most ``limit`` awaitables in flight.

        An awaitable that fails raises from the iterator and cancels the rest;
        leaving the loop early (``break``) or closing the iterator cancels what is
        still running and waits (bounded) until it has stopped. ``timeout``
        bounds the whole iteration.

        Example:
            >>> async def square(n):
            ...     await asyncio.sleep(0.001 * n)
            ...     return n * n
            >>> sorted(bridge.as_completed([square(n) for n in range(6)], limit=4))
            [0, 1, 4, 9, 16, 25]
        """
        return _combinators.as_completed(self._portal, awaitables, limit, timeout)

    # -- streams and shared resources ----------------------------------------------
    def iterate(
        self,
        async_iterable: AsyncIterable[T],
        *,
        buffer: int = 1,
        timeout: float | None = None,
    ) -> Generator[T, None, None]:
        """Iterate an async iterator (or async generator) from sync code.

        A task on the loop reads ahead into a buffer of ``buffer`` items, so
        items fetched but not yet consumed never exceed ``buffer`` and the
        consumer rarely waits for a round trip. Items arrive in order; an
        exception raised by the producer is raised here with its type. The
        whole stream runs in one task, in a copy of the context of this call
        (not of the first ``next()``), so a tracing span or log binding active
        here is seen in every item.

        Args:
            async_iterable: e.g. an async generator object.
            buffer: how many items the producer may run ahead (>= 1).
            timeout: seconds to wait for each item (default: the bridge's
                ``default_timeout``); on expiry :class:`BridgeTimeoutError`
                is raised and the stream closed.

        Raises:
            TypeError: ``async_iterable`` is not an async iterable.
            BridgeDeadlockError: called on the loop thread or in a thread
                running another event loop.

        Cancellation:
            Leaving the ``for`` loop (``break``, an exception in its body),
            ``close()`` or garbage collection of the iterator stops the
            producer: an async generator waiting for buffer space is closed
            (its ``finally`` runs), one busy fetching an item is cancelled.
            Closing waits (up to 5 s) until that cleanup has finished. If
            the bridge stops, the iterator raises
            ``concurrent.futures.CancelledError``.

        Example:
            >>> async def ticks(n):
            ...     for i in range(n):
            ...         yield i
            >>> import contextlib
            >>> with contextlib.closing(bridge.iterate(ticks(3))) as items:
            ...     print(list(items))
            [0, 1, 2]
        """
        return _streams.iterate(self._portal, async_iterable, buffer, timeout)

    def enter(
        self, async_cm: AbstractAsyncContextManager[T], *, timeout: float | None = None
    ) -> AbstractContextManager[T]:
        """Use an async context manager in a ``with`` block of sync code.

        ``__aenter__`` and ``__aexit__`` run in one task on the loop, so
        managers that must enter and exit in the same task (``TaskGroup``,
        ``asyncio.timeout``, a pooled connection) work. An exception of the
        with-block reaches ``__aexit__``, which may suppress it.

        Args:
            async_cm: the async context manager.
            timeout: seconds allowed to ``__aenter__`` and to ``__aexit__``
                each (default: the bridge's ``default_timeout``).

        Raises:
            TypeError: ``async_cm`` is not an async context manager.
            BridgeDeadlockError: entered on the loop thread or in a thread
                running another event loop.

        Cancellation:
            If the bridge stops while the block runs, ``__aexit__`` receives
            the ``CancelledError``, and leaving the block raises
            ``concurrent.futures.CancelledError`` (unless the block raised).

        Example:
            >>> from aiobridge.clients import http_session
            >>> session = bridge.resource(http_session()).get_sync()
            >>> with bridge.enter(session.get(f"{upstream_url}/health")) as response:
            ...     response.status
            200
        """
        return _streams.enter(self._portal, async_cm, timeout)

    def queue(self, maxsize: int = 0) -> janus.Queue[Any]:
        """A ``janus.Queue`` bound to this bridge's loop, closed when it stops.

        ``queue.sync_q`` is for threads, ``queue.async_q`` for coroutines on
        the bridge. See :mod:`aiobridge.queues` for the producer/consumer
        patterns and for draining before ``stop()``.

        Args:
            maxsize: items held before ``put`` blocks (0: unbounded).

        Example:
            >>> q = bridge.queue(100)
            >>> async def consume(queue):
            ...     return await queue.get()
            >>> received = bridge.spawn(consume(q.async_q))
            >>> q.sync_q.put({"event": "signup"})
            >>> received.result(timeout=5)
            {'event': 'signup'}
        """
        return _queues.make_queue(self._portal, maxsize)

    @overload
    def resource(
        self, factory: Callable[[], Awaitable[T]], *, close: Callable[[T], Any] | None = None
    ) -> Resource[T]: ...

    @overload
    def resource(
        self, factory: Callable[[], Awaitable[T] | T], *, close: Callable[[T], Any] | None = None
    ) -> Resource[T]: ...

    def resource(
        self, factory: Callable[[], Any], *, close: Callable[[Any], Any] | None = None
    ) -> Resource[Any]:
        """Register a loop-bound shared object, built lazily on the loop.

        Args:
            factory: a callable or async function that makes the object; it is
                called on the loop, once, on first use.
            close: how to close it at ``stop()`` (sync or async; default: its
                ``aclose()`` or ``close()``). Resources close newest first.

        Returns:
            A :class:`~aiobridge.Resource`: ``await res.get()`` in coroutines,
            ``res.get_sync()`` in threads.

        Example:
            >>> from aiobridge.clients import redis_client
            >>> cache = bridge.resource(redis_client(redis_url))
            >>> async def hits() -> int:
            ...     return await (await cache.get()).incr("doctest:hits")
            >>> bridge.run(hits()) >= 1
            True
        """
        return Resource(self._portal, factory, close)

    # -- introspection -----------------------------------------------------------
    def stats(self) -> BridgeStats:
        """Counters and loop-health figures; cheap, callable from any thread.

        Example:
            >>> bridge.stats().in_flight
            0
        """
        return self._portal.stats()


# -- the process-wide default bridge ---------------------------------------------------

_default: AioThread | None = None


def default_bridge(*, start: bool = True) -> AioThread:
    """The process-wide bridge, created and started on first use.

    With ``start=False`` it is returned without being started (to :meth:`~AioThread.adopt`
    a server's loop).

    It is fork-aware: in a forked child (gunicorn ``--preload``,
    ``multiprocessing`` with fork) the first call starts a fresh loop thread.
    If it was stopped, the next call makes a new one. It is stopped at exit.

    Example:
        >>> import aiobridge
        >>> aiobridge.default_bridge().running
        True
    """
    global _default
    bridge = _default
    if bridge is not None and bridge.running:
        return bridge
    # A lock of this process: one inherited through fork() may be held by a dead thread.
    with process_lock("aiobridge-default"):
        bridge = _default
        if bridge is None or bridge._portal.state is State.STOPPED:
            bridge = _default = AioThread(name="aiobridge-default")
        return bridge.start() if start else bridge


def run(awaitable: Awaitable[T], *, timeout: float | None = None) -> T:
    """Run ``awaitable`` on the default bridge and return its result.

    Example:
        >>> import asyncio, aiobridge
        >>> aiobridge.run(asyncio.sleep(0, result="done"))
        'done'
    """
    return default_bridge().run(awaitable, timeout=timeout)
