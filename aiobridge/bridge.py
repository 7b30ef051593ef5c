"""``AioThread``: the synchronous face of one long-lived event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import math
import os
import threading
import types
from collections.abc import AsyncIterable, Awaitable, Callable, Generator, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, ParamSpec, TypeVar, overload

import janus

from . import _combinators
from . import queues as _queues
from . import streams as _streams
from ._awaitables import check_awaitable, close_awaitables, describe
from ._calls import BlockingCall, FutureCall
from .errors import BridgeClosedError, BridgeDeadlockError, BridgeTimeoutError
from .loop_thread import LoopThread, State
from .monitor import BridgeStats
from .resources import Resource

__all__ = ("AioThread",)

T = TypeVar("T")
P = ParamSpec("P")

_CoroutineType = types.CoroutineType
_get_running_loop = asyncio._get_running_loop
_get_ident = threading.get_ident
_getpid = os.getpid
_copy_context = contextvars.copy_context


class AioThread:
    """One event loop in a daemon thread, shared by every thread of the process.

    Any thread hands it coroutines and blocks only on its own result. Loop-bound
    clients (an ``aiohttp.ClientSession``, a ``redis.asyncio`` pool) live on
    this loop for the life of the bridge and are shared by all callers.

    Args:
        name: name of the loop thread.
        loop_factory: makes the event loop, e.g. ``uvloop.new_event_loop``.
        debug: run the loop in asyncio debug mode.
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
        debug: bool = False,
        slow_callback_duration: float = 0.1,
        default_timeout: float | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        if loop_factory is not None and not callable(loop_factory):
            raise TypeError(f"loop_factory must be callable, got {describe(loop_factory)}")
        if not slow_callback_duration > 0:
            raise ValueError(
                f"slow_callback_duration must be > 0 seconds, got {slow_callback_duration!r}"
            )
        self._default_timeout = _check_timeout(default_timeout, "default_timeout")
        if max_in_flight is not None and (
            not isinstance(max_in_flight, int) or max_in_flight < 1
        ):
            raise ValueError(f"max_in_flight must be an int >= 1 or None, got {max_in_flight!r}")
        self._core = LoopThread(name, loop_factory, debug, slow_callback_duration, max_in_flight)

    def __repr__(self) -> str:
        return f"<AioThread {self._core.name!r} {self._core.state.value}>"

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> AioThread:
        """Start the loop thread and return once it accepts work. Idempotent.

        Raises:
            BridgeClosedError: the bridge was stopped.
        """
        self._core.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop gracefully. Idempotent.

        New work is refused at once with :class:`BridgeClosedError`. Calls
        already accepted and spawned tasks get up to ``timeout`` seconds to
        finish; the rest are cancelled (their callers get
        ``concurrent.futures.CancelledError``). Then the queues and resources the
        bridge made are closed (newest first), async generators and the default
        executor are shut down, the loop is closed and the thread joined.

        Raises:
            BridgeDeadlockError: called from the loop thread itself.
        """
        _check_timeout(timeout, "timeout")
        if self._on_loop_thread():
            raise BridgeDeadlockError(
                "AioThread.stop() was called from the bridge's own loop thread, where it "
                "would wait for itself; call it from another thread"
            )
        self._core.stop(timeout)

    def __enter__(self) -> AioThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The bridge's event loop (starts the bridge if needed)."""
        self._ensure_running()
        assert self._core.loop is not None
        return self._core.loop

    @property
    def thread(self) -> threading.Thread | None:
        """The loop thread, or None before start."""
        return self._core.thread

    @property
    def running(self) -> bool:
        """True while the loop thread accepts work in this process."""
        return self._core.state is State.RUNNING and self._core.pid == _getpid()

    @property
    def name(self) -> str:
        """The loop thread's name."""
        return self._core.name

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

        Example:
            >>> bridge.run(session.get_json(url), timeout=2.0)  # doctest: +SKIP
        """
        if type(awaitable) is not _CoroutineType:
            self._check_awaitable(awaitable, "AioThread.run()")
        core = self._core
        call: BlockingCall[T] | None = None
        try:
            self._check_may_block("run")
            wait = self._timeout(timeout)
            if core.state is not State.RUNNING or core.pid != _getpid():
                core.start()
            call = BlockingCall(awaitable, _copy_context())
            core.hand_off(call)
            acquired = call.lock.acquire(True, -1 if wait is None else wait)
        except BaseException as exc:
            if call is None or isinstance(exc, BridgeClosedError):
                close_awaitables((awaitable,))  # never reached the loop
            else:
                # A KeyboardInterrupt during the hand-off or the wait: the loop may be
                # running the coroutine already, so it is cancelled there, never closed here.
                core.abandon(call)
            raise
        if not acquired and not call.lock.acquire(False):
            core.request_cancel(call, timed_out=True)
            raise BridgeTimeoutError(
                f"AioThread.run() timed out after {timeout if timeout is not None else wait} s; "
                "the task was cancelled on the loop"
            )
        error = call.error
        if error is not None:
            call.error = None
            try:
                raise error
            finally:
                del error
        return call.value  # type: ignore[no-any-return]

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

        Example:
            >>> fut = bridge.submit(fetch(url))  # doctest: +SKIP
            >>> fut.result(timeout=5)             # doctest: +SKIP
        """
        return self._submit(awaitable, timeout, spawned=False, where="AioThread.submit()")

    def spawn(self, awaitable: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Start a tracked background task and return its future.

        Unlike :meth:`submit`, a spawned task has no timeout, ignores
        ``max_in_flight`` and logs its failure (on the ``aiobridge`` logger);
        ``stop()`` waits for it within its drain period.

        Example:
            >>> bridge.spawn(refresh_cache_forever())  # doctest: +SKIP
        """
        return self._submit(awaitable, None, spawned=True, where="AioThread.spawn()")

    def _submit(
        self, awaitable: Awaitable[T], timeout: float | None, *, spawned: bool, where: str
    ) -> concurrent.futures.Future[T]:
        if type(awaitable) is not _CoroutineType:
            self._check_awaitable(awaitable, where)
        core = self._core
        call: FutureCall[T] | None = None
        try:
            limit = None if spawned else self._timeout(timeout)
            if core.state is not State.RUNNING or core.pid != _getpid():
                core.start()
            call = FutureCall(awaitable, _copy_context(), limit, spawned)
            future = call.future
            accepted = call  # not Optional, for the closure

            def propagate_cancel(done: concurrent.futures.Future[T]) -> None:
                if done.cancelled():
                    core.request_cancel(accepted)

            future.add_done_callback(propagate_cancel)
            core.hand_off(call)
        except BaseException as exc:
            if call is None or isinstance(exc, BridgeClosedError):
                close_awaitables((awaitable,))  # never reached the loop
            else:
                core.abandon(call)  # interrupted during the hand-off: see run()
            raise
        return future

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run the plain callback ``fn(*args)`` on the loop thread, soon. Non-blocking.

        The caller's context variables are visible to the callback.

        Example:
            >>> bridge.call_soon(event.set)  # doctest: +SKIP
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"AioThread.call_soon() takes a plain callable; {describe(fn)} is a coroutine "
                "function: use bridge.spawn(fn(...)) or bridge.submit(fn(...))"
            )
        if not callable(fn):
            raise TypeError(f"AioThread.call_soon() takes a callable, got {describe(fn)}")
        self._ensure_running()
        assert self._core.loop is not None
        try:
            self._core.loop.call_soon_threadsafe(fn, *args, context=_copy_context())
        except RuntimeError as exc:
            raise BridgeClosedError(f"bridge {self.name!r} is closed") from exc

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
            >>> @bridge.wrap  # doctest: +SKIP
            ... async def fetch_user(user_id: int) -> dict: ...
            >>> fetch_user(42)  # doctest: +SKIP
        """
        _check_timeout(timeout, "timeout")

        def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, T]:
            if not callable(fn):
                raise TypeError(f"AioThread.wrap() takes an async function, got {describe(fn)}")
            if not inspect.iscoroutinefunction(fn) and not inspect.iscoroutinefunction(
                getattr(fn, "__call__", None)  # noqa: B004
            ):
                raise TypeError(
                    f"AioThread.wrap() takes an async function (async def); {describe(fn)} "
                    "is a regular function, call it directly"
                )

            @functools.wraps(fn)
            def blocking(*args: P.args, **kwargs: P.kwargs) -> T:
                return self.run(fn(*args, **kwargs), timeout=timeout)

            return blocking

        if async_fn is None:
            return decorate
        return decorate(async_fn)

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
            >>> user, orders = bridge.gather(get_user(1), get_orders(1))  # doctest: +SKIP
        """
        items = self._check_all(awaitables, "AioThread.gather()")
        return self._run_group(_combinators.gather_all(items, return_exceptions), items, timeout)

    def first(self, *awaitables: Awaitable[T], timeout: float | None = None) -> T:
        """Return the first successful result; the other awaitables are cancelled.

        If all fail, the earliest failure is raised (a note lists the others).

        Example:
            >>> body = bridge.first(fetch(mirror_a), fetch(mirror_b))  # doctest: +SKIP
        """
        items = self._check_all(awaitables, "AioThread.first()")
        if not items:
            raise ValueError("AioThread.first() needs at least one awaitable")
        return self._run_group(_combinators.first_of(items), items, timeout)

    def _run_group(
        self, driver: Awaitable[T], items: list[Awaitable[Any]], timeout: float | None
    ) -> T:
        try:
            return self.run(driver, timeout=timeout)
        except BaseException:
            # If the driver never ran, its awaitables were never awaited: close them.
            # Closing a finished coroutine is a no-op, so this is safe either way.
            close_awaitables(items)
            raise

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
            >>> for page in bridge.as_completed(map(fetch, urls), limit=4):  # doctest: +SKIP
            ...     save(page)
        """
        if isinstance(awaitables, (str, bytes)) or not isinstance(awaitables, Iterable):
            close_awaitables((awaitables,))
            raise TypeError(
                "AioThread.as_completed() takes one iterable of awaitables, got "
                f"{describe(awaitables)}; pass a list: as_completed([a, b])"
            )
        items = self._check_all(tuple(awaitables), "AioThread.as_completed()")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            close_awaitables(items)
            raise ValueError(f"limit must be an int >= 1 or None, got {limit!r}")
        try:
            self._check_may_block("as_completed")
            wait = self._timeout(timeout)
        except BaseException:
            close_awaitables(items)
            raise
        return _combinators.iterate_completed(
            self.submit, items, limit or max(1, len(items)), wait
        )

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
        exception raised by the producer is raised here with its type.

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
            >>> with contextlib.closing(bridge.iterate(ticks(3))) as items:  # doctest: +SKIP
            ...     print(list(items))
            [0, 1, 2]
        """
        return _streams.iterate(self, async_iterable, buffer, timeout)

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
            >>> with bridge.enter(session.get(url)) as response:  # doctest: +SKIP
            ...     status = response.status
        """
        return _streams.enter(self, async_cm, timeout)

    def queue(self, maxsize: int = 0) -> janus.Queue[Any]:
        """A ``janus.Queue`` bound to this bridge's loop, closed when it stops.

        ``queue.sync_q`` is for threads, ``queue.async_q`` for coroutines on
        the bridge. See :mod:`aiobridge.queues` for the producer/consumer
        patterns and for draining before ``stop()``.

        Args:
            maxsize: items held before ``put`` blocks (0: unbounded).

        Example:
            >>> q = bridge.queue(100)                       # doctest: +SKIP
            >>> bridge.spawn(consume(q.async_q))           # doctest: +SKIP
            >>> q.sync_q.put({"event": "signup"})          # doctest: +SKIP
        """
        return _queues.make_queue(self, maxsize)

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
            >>> cache = bridge.resource(redis_client("redis://127.0.0.1:6379/0"))  # doctest: +SKIP
            >>> async def hits() -> int:
            ...     return await (await cache.get()).incr("hits")
        """
        return Resource(self, factory, close)

    # -- introspection -----------------------------------------------------------
    def stats(self) -> BridgeStats:
        """Counters and loop-health figures; cheap, callable from any thread.

        Example:
            >>> bridge.stats().in_flight  # doctest: +SKIP
            0
        """
        core = self._core
        c = core.counters
        p50, p99 = core.monitor.lag_percentiles()
        queued = len(core._waiting)
        return BridgeStats(
            submitted=c.submitted,
            completed=c.completed,
            failed=c.failed,
            cancelled=c.cancelled,
            timed_out=c.timed_out,
            in_flight=c.in_flight,
            queued=queued,
            spawned=c.spawned,
            loop_lag_p50=p50,
            loop_lag_p99=p99,
            loop_lag_max=core.monitor.lag_max,
            slow_callbacks=core.monitor.slow_callbacks,
            cancel_ignored=c.cancel_ignored,
            cancel_redelivered=c.cancel_redelivered,
        )

    # -- helpers -------------------------------------------------------------------
    def _ensure_running(self) -> None:
        core = self._core
        if core.state is not State.RUNNING or core.pid != _getpid():
            core.start()

    def _on_loop_thread(self) -> bool:
        core = self._core
        return core.thread_ident == _get_ident() and core.pid == _getpid()

    def _check_may_block(self, method: str) -> None:
        if self._on_loop_thread():
            raise BridgeDeadlockError(
                f"AioThread.{method}() was called from the bridge's own loop thread and would "
                "wait for itself forever; inside a coroutine, await the awaitable directly"
            )
        if _get_running_loop() is not None:
            raise BridgeDeadlockError(
                f"AioThread.{method}() was called from a thread that is running an event loop; "
                "blocking here would freeze that loop. Await the awaitable instead, or use "
                f"await asyncio.wrap_future(bridge.submit(...))"
            )

    def _check_awaitable(self, awaitable: object, where: str) -> None:
        check_awaitable(awaitable, where)
        if isinstance(awaitable, asyncio.Future):
            core = self._core
            if core.loop is None or awaitable.get_loop() is not core.loop:
                raise TypeError(
                    f"{where} got an asyncio Future/Task bound to another event loop; "
                    f"bridge {self.name!r} can only await futures of its own loop. "
                    "Pass the coroutine instead"
                )

    def _check_all(self, awaitables: tuple[Awaitable[T], ...], where: str) -> list[Awaitable[T]]:
        items = list(awaitables)
        for index, item in enumerate(items):
            try:
                self._check_awaitable(item, where)
            except TypeError as exc:
                close_awaitables(items)
                raise TypeError(f"argument {index}: {exc}") from None
        return items

    def _timeout(self, timeout: float | None) -> float | None:
        if timeout is None:
            return self._default_timeout
        return _check_timeout(timeout, "timeout")




def _check_timeout(timeout: float | None, what: str) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, got {describe(timeout)}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"{what} must be >= 0 seconds or None, got {timeout!r}")
    if math.isinf(timeout):
        return None
    return float(timeout)
