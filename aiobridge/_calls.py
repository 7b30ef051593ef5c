"""One object per call crossing from a thread to the loop, and its two waiters.

A call is created on the caller's thread, handed to the loop thread once
(through the loop thread's inbox) and settled once on the loop thread. The
blocking flavour (:class:`BlockingCall`, used by ``run()``) wakes its caller
through a bare lock, the cheapest primitive a thread can sleep on; the future
flavour (:class:`FutureCall`, used by ``submit()`` and ``spawn()``) settles a
:class:`concurrent.futures.Future`.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextvars
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import BridgeTimeoutError

if TYPE_CHECKING:
    from ._threads import NativeLock

__all__ = ("BlockingCall", "Call", "FutureCall", "Waker", "wake_now")

T = TypeVar("T")

#: Runs a caller's wake-up, now or just before the loop next blocks.
Waker = Callable[[Callable[[], None]], None]


def wake_now(notify: Callable[[], None]) -> None:
    """A waker that wakes the caller at once."""
    notify()


class Call(abc.ABC, Generic[T]):
    """State shared by both flavours; mutated on the loop thread only.

    ``task`` is set once the call runs on the loop; ``timer`` holds a loop-side
    timeout; ``cancel_requested`` and ``timed_out`` record why it was cancelled;
    ``cancel_sent`` that the loop cancelled its running task.
    """

    __slots__ = (
        "awaitable",
        "cancel_requested",
        "cancel_sent",
        "context",
        "settled",
        "spawned",
        "started",
        "task",
        "timed_out",
        "timeout",
        "timer",
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

    @abc.abstractmethod
    def succeed(self, value: T, wake: Waker) -> None:
        """Deliver a result (first settlement wins); ``wake`` runs the notification."""

    @abc.abstractmethod
    def fail(self, error: BaseException, wake: Waker) -> None:
        """Deliver an exception (first settlement wins)."""

    def cancelled(self, wake: Waker) -> None:
        """Deliver the outcome of a cancelled task: a timeout or a cancellation."""
        if self.timed_out:
            self.fail(BridgeTimeoutError(f"call did not finish within {self.timeout} s"), wake)
        else:
            self.fail(concurrent.futures.CancelledError(), wake)


class BlockingCall(Call[T]):
    """A call whose caller sleeps on a lock until the loop settles it.

    ``new_lock`` makes that lock: ``threading.Lock``, or under gevent a lock a
    greenlet waits on without blocking the hub.
    """

    __slots__ = ("error", "lock", "value")

    def __init__(
        self,
        awaitable: Awaitable[T],
        context: contextvars.Context,
        new_lock: Callable[[], NativeLock],
    ) -> None:
        super().__init__(awaitable, context)
        self.value: Any = None
        self.error: BaseException | None = None
        self.lock = new_lock()
        self.lock.acquire()

    def succeed(self, value: T, wake: Waker) -> None:
        if not self.settled:
            self.settled = True
            self.value = value
            wake(self.lock.release)

    def fail(self, error: BaseException, wake: Waker) -> None:
        if not self.settled:
            self.settled = True
            self.error = error
            wake(self.lock.release)


class FutureCall(Call[T]):
    """A call settled through a :class:`concurrent.futures.Future`."""

    __slots__ = ("error", "future", "value")

    def __init__(
        self,
        awaitable: Awaitable[T],
        context: contextvars.Context,
        timeout: float | None = None,
        spawned: bool = False,
    ) -> None:
        super().__init__(awaitable, context, timeout, spawned)
        self.future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self.value: Any = None
        self.error: BaseException | None = None

    def succeed(self, value: T, wake: Waker) -> None:
        if not self.settled:
            self.settled = True
            self.value = value
            wake(self._notify)

    def fail(self, error: BaseException, wake: Waker) -> None:
        if not self.settled:
            self.settled = True
            self.error = error
            wake(self._notify)

    def _notify(self) -> None:
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
