"""``AioThread.enter``: an async context manager used in a ``with`` block of sync code.

``__aenter__`` and ``__aexit__`` run in one task on the loop (managers that
must enter and exit in the same task work); the thread waits for each half,
by switching in a request greenlet (``aiobridge.onloop``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._core.awaitables import close_awaitables, describe
from .._core.switch import SwitchingFuture
from ..errors import BridgeTimeoutError

if TYPE_CHECKING:
    from .._core.portal import Portal

__all__ = ("enter", "refused_coroutine")

T = TypeVar("T")


def refused_coroutine(obj: object) -> str:
    """Close a coroutine passed where it does not belong (no "never awaited"); a hint."""
    if not asyncio.iscoroutine(obj):
        return ""
    close_awaitables((obj,))
    return " (a coroutine: use bridge.run() for its result)"


class _Entered(Generic[T]):
    """The sync face of an async context manager entered on the loop."""

    def __init__(
        self, portal: Portal, manager: AbstractAsyncContextManager[T], timeout: float | None
    ) -> None:
        self._portal = portal
        self._manager = manager
        self._timeout = timeout
        # Waited for by switching in a request greenlet (aiobridge.onloop).
        self._entered: concurrent.futures.Future[T] = SwitchingFuture()
        self._leave: asyncio.Future[BaseException | None] | None = None
        self._outcome: concurrent.futures.Future[tuple[bool, Any]] | None = None

    async def _hold(self) -> tuple[bool, Any]:
        """Enter, wait for the thread to leave the block, exit: all in this one task.

        Returns ``(True, suppressed)`` or ``(False, error)``: an error is the
        caller's to handle, not a failure of a background task.
        """
        manager = self._manager
        kind = type(manager)
        try:
            value = await kind.__aenter__(manager)
        except BaseException as exc:
            self._entered.set_exception(exc)
            return True, False
        self._leave = leave = asyncio.get_running_loop().create_future()
        self._entered.set_result(value)
        try:
            error = await leave
        except asyncio.CancelledError as cancelled:
            # The bridge is stopping (or the thread gave up): leave with the
            # cancellation, as ``async with`` would.
            if not await kind.__aexit__(
                manager, type(cancelled), cancelled, cancelled.__traceback__
            ):
                raise
            return True, True
        try:
            if error is None:
                await kind.__aexit__(manager, None, None, None)
                return True, False
            return True, bool(
                await kind.__aexit__(manager, type(error), error, error.__traceback__)
            )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            return False, exc

    def __enter__(self) -> T:
        if self._outcome is not None:
            raise RuntimeError("a context manager from AioThread.enter() can be entered once")
        self._portal.check_may_block("enter")
        self._outcome = self._portal.spawn(self._hold())
        try:
            return self._entered.result(self._timeout)
        except concurrent.futures.TimeoutError:
            self._outcome.cancel()
            raise BridgeTimeoutError(
                f"AioThread.enter(): __aenter__ of {describe(self._manager)} took more than "
                f"{self._timeout} s and was cancelled"
            ) from None
        except BaseException:
            if not self._entered.done():  # KeyboardInterrupt while waiting
                self._outcome.cancel()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        outcome = self._outcome
        leave = self._leave
        assert outcome is not None
        assert leave is not None
        with contextlib.suppress(RuntimeError):  # loop gone: the outcome says why
            leave.get_loop().call_soon_threadsafe(_leave_with, leave, exc)
        try:
            ok, value = outcome.result(self._timeout)
        except concurrent.futures.TimeoutError:
            outcome.cancel()
            raise BridgeTimeoutError(
                f"AioThread.enter(): __aexit__ of {describe(self._manager)} took more than "
                f"{self._timeout} s and was cancelled"
            ) from exc
        except concurrent.futures.CancelledError:
            if exc is not None:
                return False  # the block's own error is the one to see
            raise
        except BaseException:  # KeyboardInterrupt while waiting
            outcome.cancel()
            raise
        if not ok:
            try:
                raise value
            finally:
                del value
        return bool(value)


def _leave_with(leave: asyncio.Future[BaseException | None], exc: BaseException | None) -> None:
    if not leave.done():
        leave.set_result(exc)


def enter(
    portal: Portal, manager: AbstractAsyncContextManager[T], timeout: float | None
) -> _Entered[T]:
    """The implementation of :meth:`aiobridge.AioThread.enter`."""
    if not (hasattr(manager, "__aenter__") and hasattr(manager, "__aexit__")):
        hint = " (a sync context manager: use 'with' directly)" if hasattr(
            manager, "__enter__") else ""
        hint = refused_coroutine(manager) or hint
        raise TypeError(
            f"AioThread.enter() takes an async context manager, got {describe(manager)}{hint}"
        )
    return _Entered(portal, manager, portal.timeout(timeout))
