"""The portal: the one object through which everything above the core reaches a loop thread.

:class:`Portal` sits between the public facade (:class:`aiobridge.AioThread`),
the features (``_features``: streams, queues, resources, combinators) and the
loop thread. It hands calls to the loop (``run``, ``submit``), holds the
checks every blocking feature needs (the deadlock guard, the default timeout,
awaitable validation), and names each thing a feature may ask of the loop
thread (a closer at stop, a callback in order, the loop itself). Nothing above
it touches the loop thread::

    AioThread ──▶ _features ──▶ Portal ──▶ LoopThread (Inbox, Dispatcher, ...)

The hot path of ``run()``: :meth:`Portal.run` → :meth:`.Inbox.hand_off` →
(doorbell) → :meth:`.Dispatcher.drain` → ``accept`` → ``launch`` →
``execute`` → :meth:`.Call.succeed` → the caller's lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import os
import threading
import types
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import ParamSpec, TypeVar

from ..errors import BridgeClosedError, BridgeDeadlockError, BridgeTimeoutError
from .awaitables import check_awaitable, close_awaitables, describe
from .calls import BlockingCall, FutureCall
from .context import copy_back
from .loop_thread import Closer, LoopThread
from .observers import BridgeStats
from .options import check_timeout, interpreter_debug_mode
from .state import State
from .switch import Switch, SwitchingFuture, run_switched, switch_here

__all__ = ("Portal", "check_timeout", "interpreter_debug_mode")

T = TypeVar("T")
P = ParamSpec("P")

_CoroutineType = types.CoroutineType
_get_running_loop = asyncio._get_running_loop
_get_ident = threading.get_ident
_getpid = os.getpid
_copy_context = contextvars.copy_context


class Portal:
    """One loop thread plus the rules of handing calls to it.

    Made with :meth:`create`; the loop thread starts on first use.

    Args:
        loop_thread: the loop thread.
        default_timeout: seconds applied when a call passes no timeout.
    """

    __slots__ = ("__weakref__", "_loop_thread", "default_timeout")

    def __init__(self, loop_thread: LoopThread, default_timeout: float | None) -> None:
        self._loop_thread = loop_thread
        self.default_timeout = default_timeout
        # An observer factory is told of the bridge through its portal.
        loop_thread.observed_as = weakref.ref(self)

    @classmethod
    def create(
        cls,
        name: str,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
        debug: bool | None,
        slow_callback_duration: float,
        default_timeout: float | None,
        max_in_flight: int | None,
    ) -> Portal:
        """Check ``AioThread``'s options and make its portal (the thread starts later)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        if loop_factory is not None and not callable(loop_factory):
            raise TypeError(f"loop_factory must be callable, got {describe(loop_factory)}")
        if not slow_callback_duration > 0:
            raise ValueError(
                f"slow_callback_duration must be > 0 seconds, got {slow_callback_duration!r}"
            )
        default_timeout = check_timeout(default_timeout, "default_timeout")
        if max_in_flight is not None and (
            not isinstance(max_in_flight, int) or max_in_flight < 1
        ):
            raise ValueError(f"max_in_flight must be an int >= 1 or None, got {max_in_flight!r}")
        if debug is None:
            debug = interpreter_debug_mode()
        loop_thread = LoopThread(name, loop_factory, bool(debug), slow_callback_duration,
                                 max_in_flight)
        return cls(loop_thread, default_timeout)

    # -- the loop thread's lifecycle ---------------------------------------------------
    @property
    def name(self) -> str:
        """The loop thread's name."""
        return self._loop_thread.name

    @property
    def state(self) -> State:
        """Where the loop thread is in its lifecycle (as this process sees it)."""
        return self._loop_thread.state

    @property
    def running(self) -> bool:
        """True while the loop thread accepts work in this process."""
        lt = self._loop_thread
        return lt.state is State.RUNNING and lt.pid == _getpid()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop of the current life of the loop thread, or None before it starts."""
        return self._loop_thread.loop

    @property
    def thread(self) -> threading.Thread | None:
        """The loop thread, or None before start."""
        return self._loop_thread.thread

    def start(self) -> None:
        """Start the loop thread and return once it accepts work. Idempotent."""
        self._loop_thread.start()

    def stop(self, timeout: float) -> None:
        """Drain for up to ``timeout`` seconds, cancel the rest, close, join."""
        self._loop_thread.stop(timeout)

    @property
    def adopted(self) -> bool:
        """True if the bridge runs on a loop it adopted (a server's) rather than its own."""
        return self._loop_thread.adopted

    def adopt(self) -> None:
        """Run on the calling thread's running loop instead of a thread of its own."""
        self._loop_thread.adopt()

    async def stop_adopted(self, drain_seconds: float) -> None:
        """Stop an adopted bridge from a coroutine on its loop; the loop keeps running."""
        await self._loop_thread.stop_adopted(drain_seconds)

    def ensure_running(self) -> None:
        """Start the loop thread unless it already runs in this process."""
        lt = self._loop_thread
        if lt.state is not State.RUNNING or lt.pid != _getpid():
            lt.start()

    # -- what features ask of the loop thread ------------------------------------------
    def owns_loop(self, loop: asyncio.AbstractEventLoop | None) -> bool:
        """True if ``loop`` is this bridge's loop, in this process."""
        lt = self._loop_thread
        return loop is not None and loop is lt.loop and lt.pid == _getpid()

    def add_closer(self, closer: Closer) -> None:
        """Run ``closer()`` on the loop when the bridge stops, last added first (bounded)."""
        self._loop_thread.add_closer(closer)

    def remove_closer(self, closer: Closer) -> None:
        """Forget a closer added with :meth:`add_closer`."""
        self._loop_thread.remove_closer(closer)

    def send(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` on the loop after every call handed off before; never blocks.

        Raises ``RuntimeError`` if the loop is closed or gone.
        """
        self._loop_thread.inbox.send(fn, *args)

    def waiting_for_loop(self) -> AbstractContextManager[None]:
        """Wrap a caller's wait on a ``threading`` condition that the loop thread ends.

        Under gevent it keeps the caller's hub running; elsewhere it does nothing.
        """
        return self._loop_thread.threads.waiting_for_loop()

    def wake(self, notify: Callable[[], None]) -> None:
        """On the loop: run ``notify`` (a thread wake-up) just before the loop next blocks."""
        dispatcher = self._loop_thread.dispatcher
        if dispatcher is None:
            notify()
        else:
            dispatcher.wake(notify)

    # -- checks ----------------------------------------------------------------------
    def on_loop_thread(self) -> bool:
        """True when called on the loop thread itself."""
        lt = self._loop_thread
        return lt.thread_ident == _get_ident() and lt.pid == _getpid()

    def stopping_would_deadlock(self) -> bool:
        """True on the loop thread while its loop runs: ``stop()`` would wait for itself."""
        return self.on_loop_thread() and _get_running_loop() is not None

    def switch_here(self) -> Switch | None:
        """The switch of the calling request greenlet on this bridge's (adopted) loop, if any."""
        if self._loop_thread.thread_ident != _get_ident():
            return None
        return switch_here()

    def check_may_block(self, method: str) -> None:
        """Raise :class:`BridgeDeadlockError` if blocking here would never end.

        In a request greenlet (``aiobridge.onloop``) every waiting method
        switches to the loop instead of blocking, so nothing is refused there.

        Args:
            method: the ``AioThread`` method name, for the message.
        """
        if self.on_loop_thread() and switch_here() is not None:
            return
        if self.on_loop_thread():
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

    def timeout(self, timeout: float | None) -> float | None:
        """The timeout a call gets: ``timeout``, checked, else the default."""
        if timeout is None:
            return self.default_timeout
        return check_timeout(timeout, "timeout")

    def check_awaitable(self, awaitable: object, where: str) -> None:
        """Raise ``TypeError`` unless ``awaitable`` can run on this loop."""
        check_awaitable(awaitable, where)
        if isinstance(awaitable, asyncio.Future):
            loop = self._loop_thread.loop
            if loop is None or awaitable.get_loop() is not loop:
                raise TypeError(
                    f"{where} got an asyncio Future/Task bound to another event loop; "
                    f"bridge {self.name!r} can only await futures of its own loop. "
                    "Pass the coroutine instead"
                )

    def check_all(self, awaitables: tuple[Awaitable[T], ...], where: str) -> list[Awaitable[T]]:
        """Check every awaitable; on a mistake close them all and raise ``TypeError``."""
        items = list(awaitables)
        for index, item in enumerate(items):
            try:
                self.check_awaitable(item, where)
            except TypeError as exc:
                close_awaitables(items)
                raise TypeError(f"argument {index}: {exc}") from None
        return items

    def stats(self) -> BridgeStats:
        """A snapshot of the counters and loop-health figures (``AioThread.stats``)."""
        lt = self._loop_thread
        c = lt.counters
        monitor = lt.monitor
        p50, p99 = monitor.lag_percentiles()
        return BridgeStats(
            submitted=c.submitted,
            completed=c.completed,
            failed=c.failed,
            cancelled=c.cancelled,
            timed_out=c.timed_out,
            in_flight=c.in_flight,
            queued=0 if lt.dispatcher is None else len(lt.dispatcher.waiting),
            spawned=c.spawned,
            loop_lag_p50=p50,
            loop_lag_p99=p99,
            loop_lag_max=monitor.lag_max,
            slow_callbacks=monitor.slow_callbacks,
            cancel_ignored=c.cancel_ignored,
            cancel_redelivered=c.cancel_redelivered,
        )

    # -- calls -----------------------------------------------------------------------
    def run(self, awaitable: Awaitable[T], timeout: float | None) -> T:
        """Run ``awaitable`` on the loop and block until its result (``AioThread.run``)."""
        if type(awaitable) is not _CoroutineType:
            self.check_awaitable(awaitable, "AioThread.run()")
        lt = self._loop_thread
        if lt.thread_ident == _get_ident():
            switch = switch_here()  # a request greenlet on an adopted loop: switch
            if switch is not None:
                return self._run_switched(switch, awaitable, timeout)
        call: BlockingCall[T] | None = None
        try:
            self.check_may_block("run")
            wait = self.timeout(timeout)
            if lt.state is not State.RUNNING or lt.pid != _getpid():
                lt.start()
            call = BlockingCall(awaitable, _copy_context(), lt.threads.caller_lock)
            lt.inbox.hand_off(call)
            acquired = call.lock.acquire(True, -1 if wait is None else wait)
        except BaseException as exc:
            if call is None or isinstance(exc, BridgeClosedError):
                close_awaitables((awaitable,))  # never reached the loop
            else:
                # A KeyboardInterrupt during the hand-off or the wait: the loop may be
                # running the coroutine already, so it is cancelled there, never closed here.
                lt.inbox.abandon(call)
            raise
        if not acquired and not call.lock.acquire(False):
            lt.inbox.request_cancel(call, timed_out=True)
            raise BridgeTimeoutError(
                f"AioThread.run() timed out after {timeout if timeout is not None else wait} s; "
                "the task was cancelled on the loop"
            )
        context = call.context
        if context != _copy_context():  # the call set context variables: keep them, as await
            copy_back(context)
        error = call.error
        if error is not None:
            call.error = None
            try:
                raise error
            finally:
                del error
        return call.value  # type: ignore[no-any-return]

    def _run_switched(self, switch: Switch, awaitable: Awaitable[T], timeout: float | None) -> T:
        lt = self._loop_thread
        try:
            wait = self.timeout(timeout)
            if lt.state is not State.RUNNING or lt.pid != _getpid():
                raise BridgeClosedError(
                    f"bridge {self.name!r} is {lt.state.value} and accepts no new work"
                )
        except BaseException:
            close_awaitables((awaitable,))
            raise
        return run_switched(switch, awaitable, wait, lt)

    def submit(
        self, awaitable: Awaitable[T], timeout: float | None, *, spawned: bool, where: str
    ) -> concurrent.futures.Future[T]:
        """Schedule ``awaitable`` on the loop; a future of its result (``submit``/``spawn``)."""
        if type(awaitable) is not _CoroutineType:
            self.check_awaitable(awaitable, where)
        lt = self._loop_thread
        call: FutureCall[T] | None = None
        try:
            limit = None if spawned else self.timeout(timeout)
            if lt.state is not State.RUNNING or lt.pid != _getpid():
                lt.start()
            keepalive = None if spawned else lt.threads.submit_keepalive()
            call = FutureCall(awaitable, _copy_context(), limit, spawned, keepalive)
            if lt.thread_ident == _get_ident() and switch_here() is not None:
                call.future = SwitchingFuture()  # a request greenlet waits by switching
            future = call.future
            accepted = call  # not Optional, for the closure

            def propagate_cancel(done: concurrent.futures.Future[T]) -> None:
                if done.cancelled():
                    lt.inbox.request_cancel(accepted)

            future.add_done_callback(propagate_cancel)
            lt.inbox.hand_off(call)
        except BaseException as exc:
            if call is None or isinstance(exc, BridgeClosedError):
                close_awaitables((awaitable,))  # never reached the loop
            else:
                lt.inbox.abandon(call)  # interrupted during the hand-off: see run()
            raise
        return future

    def spawn(self, awaitable: Awaitable[T]) -> concurrent.futures.Future[T]:
        """A tracked background task (``AioThread.spawn``)."""
        return self.submit(awaitable, None, spawned=True, where="AioThread.spawn()")

    def call_soon(self, fn: Callable[..., object], args: tuple[object, ...]) -> None:
        """Schedule the plain callback ``fn(*args)`` on the loop (``AioThread.call_soon``)."""
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"AioThread.call_soon() takes a plain callable; {describe(fn)} is a coroutine "
                "function: use bridge.spawn(fn(...)) or bridge.submit(fn(...))"
            )
        if not callable(fn):
            raise TypeError(f"AioThread.call_soon() takes a callable, got {describe(fn)}")
        self.ensure_running()
        try:
            self._loop_thread.inbox.send(fn, *args, context=_copy_context())
        except RuntimeError as exc:
            raise BridgeClosedError(f"bridge {self.name!r} is closed") from exc

    def blocking(self, fn: Callable[P, Awaitable[T]], timeout: float | None) -> Callable[P, T]:
        """``fn`` made blocking: each call runs on the loop (``AioThread.wrap``)."""
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
            return self.run(fn(*args, **kwargs), timeout)

        return blocking
