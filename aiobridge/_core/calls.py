"""One object per call crossing from a thread to the loop, and how its caller is woken.

A call is made on the caller's thread, handed to the loop thread once (through
the inbox, :mod:`.handoff`) and settled once on the loop thread
(:mod:`.dispatch`). Every field below is written on the loop thread only,
except ``settled``, which the caller may read to skip a useless cancel.

States (left to right; any state may jump to SETTLED when the bridge stops)::

    HANDED OFF ──accept──▶ WAITING ──slot──▶ LAUNCHED ──first step──▶ RUNNING ──▶ SETTLED
         │        (max_in_flight)  │              │                       │
         └──────── cancel ─────────┴── cancel ────┴──▶ SETTLED, awaitable closed, never run

The five flags that decide what a cancellation does:

================== =========================================================
``started``        the task took its first step: the awaitable now runs, so
                   it is cancelled through its task, never closed.
``cancel_requested`` cancelled before its first step: the step settles it as
                   cancelled and closes the awaitable (no "never awaited").
``cancel_sent``    the loop cancelled the running task: whatever the task
                   then returns or raises (but ``CancelledError``) means a
                   library dropped the cancellation.
``timed_out``      the cancellation came from the call's timeout: the caller
                   gets :class:`BridgeTimeoutError`, not ``CancelledError``.
``settled``        the outcome is delivered; later outcomes are ignored
                   (first settlement wins).
================== =========================================================

The blocking flavour (:class:`BlockingCall`, behind ``run()``) wakes its caller
through a bare lock, the cheapest thing a thread can sleep on; the future
flavour (:class:`FutureCall`, behind ``submit()`` and ``spawn()``) settles a
:class:`concurrent.futures.Future`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..errors import BridgeTimeoutError

if TYPE_CHECKING:
    from .._backends.threads import NativeLock

__all__ = ("BlockingCall", "Call", "FutureCall", "Waker", "wake_now")

T = TypeVar("T")

#: Runs a caller's wake-up, now or just before the loop next blocks.
Waker = Callable[[Callable[[], None]], None]


def wake_now(notify: Callable[[], None]) -> None:
    """A waker that wakes the caller at once."""
    notify()


class Call(Generic[T]):
    """State shared by both flavours (see the module's table of flags).

    ``task`` is set once the call runs on the loop; ``timer`` holds its
    loop-side timeout; ``value``/``error`` the outcome until the caller reads
    it; ``notify`` wakes the caller (set by each flavour).
    """

    __slots__ = (
        "awaitable",
        "cancel_requested",
        "cancel_sent",
        "context",
        "error",
        "notify",
        "settled",
        "spawned",
        "started",
        "task",
        "timed_out",
        "timeout",
        "timer",
        "value",
    )

    def __init__(
        self,
        awaitable: Awaitable[T],
        context: contextvars.Context,
        timeout: float | None = None,
        spawned: bool = False,
    ) -> None:
        self.awaitable = awaitable
        self.context = context
        self.timeout = timeout
        self.spawned = spawned
        self.settled = False
        self.started = False
        self.cancel_requested = False
        self.cancel_sent = False
        self.timed_out = False
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.value: Any = None
        self.error: BaseException | None = None
        self.notify: Callable[[], None] = _nothing

    def succeed(self, value: T, wake: Waker) -> None:
        """Deliver a result (first settlement wins); ``wake`` runs the notification."""
        if not self.settled:
            self.settled = True
            self.value = value
            wake(self.notify)

    def fail(self, error: BaseException, wake: Waker) -> None:
        """Deliver an exception (first settlement wins)."""
        if not self.settled:
            self.settled = True
            self.error = error
            wake(self.notify)

    def cancelled(self, wake: Waker) -> None:
        """Deliver the outcome of a cancelled task: a timeout or a cancellation."""
        if self.timed_out:
            self.fail(BridgeTimeoutError(f"call did not finish within {self.timeout} s"), wake)
        else:
            self.fail(concurrent.futures.CancelledError(), wake)


def _nothing() -> None:
    """The notification of a call that has nobody to wake yet."""


class BlockingCall(Call[T]):
    """A call whose caller sleeps on a lock until the loop settles it.

    ``new_lock`` makes that lock: ``threading.Lock``, or under gevent a lock a
    greenlet waits on without blocking the hub.
    """

    __slots__ = ("lock",)

    def __init__(
        self,
        awaitable: Awaitable[T],
        context: contextvars.Context,
        new_lock: Callable[[], NativeLock],
    ) -> None:
        super().__init__(awaitable, context)
        self.lock = new_lock()
        self.lock.acquire()
        self.notify = self.lock.release


class FutureCall(Call[T]):
    """A call settled through a :class:`concurrent.futures.Future`.

    Args:
        keepalive: run after the future is settled; a backend's way to keep
            the caller's scheduler alive until then (gevent's hub).
    """

    __slots__ = ("future", "keepalive")

    def __init__(
        self,
        awaitable: Awaitable[T],
        context: contextvars.Context,
        timeout: float | None = None,
        spawned: bool = False,
        keepalive: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(awaitable, context, timeout, spawned)
        self.future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self.keepalive = keepalive
        self.notify = self._settle_future

    def _settle_future(self) -> None:
        future, error = self.future, self.error
        self.error = None
        try:
            if error is None:
                future.set_result(self.value)
            elif isinstance(error, concurrent.futures.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)
        except concurrent.futures.InvalidStateError:
            pass  # the caller cancelled the future in the meantime
        finally:
            keepalive, self.keepalive = self.keepalive, None
            if keepalive is not None:
                keepalive()
