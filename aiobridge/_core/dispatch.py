"""The loop side of a call: take it in, run it as a task, settle it, cancel it.

Everything here runs on the loop thread. The path of one call::

    drain() ── accept() ──▶ launch() ──▶ execute()  ──▶ call.succeed/fail/cancelled
                  │           ▲             │
                  └─ waiting ─┘ (a slot     └─ frees a slot: launch(next waiting)
                    frees up, max_in_flight)

A call's task is created here, never on the caller's thread: asyncio tasks are
not thread-safe. How each cancellation ends is decided by the call's flags
(see :mod:`.calls`) and delivered through :class:`~.cancellation.Redeliverer`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .awaitables import close_awaitables
from .calls import Call, Waker
from .cancellation import Redeliverer
from .health import Counters

if TYPE_CHECKING:
    from .handoff import Inbox
    from .observers import Observer, Outcome

__all__ = ("Dispatcher",)

logger = logging.getLogger("aiobridge")

_EAGER = sys.version_info >= (3, 12)
_clock = time.perf_counter


class Dispatcher:
    """Runs the calls of one loop, from the inbox to their settlement.

    Args:
        loop: the loop (its thread runs every method).
        inbox: where callers hand their calls off.
        counters: the bridge's counters (``stats()``).
        observer: told of every call's end, if any.
        max_in_flight: at most this many calls run at once; the rest wait in order.
        wake: how a settled call's caller is woken (see :mod:`.wakeup`).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        inbox: Inbox,
        counters: Counters,
        observer: Observer | None,
        max_in_flight: int | None,
        wake: Waker,
    ) -> None:
        self.loop = loop
        self.inbox = inbox
        self.counters = counters
        self.observer = observer
        self.max_in_flight = max_in_flight
        self.wake = wake
        self.redeliverer = Redeliverer(loop)
        #: Calls whose task exists and has not ended.
        self.active: set[Call[Any]] = set()
        #: Calls accepted but waiting for a slot (``max_in_flight``).
        self.waiting: deque[Call[Any]] = deque()
        #: Set once the loop has stopped: no waiting call is launched any more.
        self.closed = False
        #: An observer without the selector's hook (a loop_factory loop): told per change.
        self.report_each_call = False
        # The gauges the observer was last told (see report_gauges).
        self._shown_in_flight = 0
        self._shown_queued = 0

    # -- taking calls in ---------------------------------------------------------------
    def drain(self) -> None:
        """Take in every call handed off so far (what a ring of the doorbell runs)."""
        self.inbox.wake_pending = False
        calls = self.inbox.calls
        while calls:
            self.accept(calls.popleft())

    def accept(self, call: Call[Any]) -> None:
        """Count a call, arm its timeout, and run it now or queue it for a slot."""
        counters = self.counters
        counters.submitted += 1
        if call.spawned:
            counters.spawned += 1
        if call.cancel_requested:
            self.settle_unstarted(call)
            return
        if call.timeout is not None:
            call.timer = self.loop.call_later(call.timeout, self.cancel, call, True)
        limit = self.max_in_flight
        if limit is not None and not call.spawned and (counters.in_flight >= limit
                                                       or self.waiting):  # fmt: skip
            self.waiting.append(call)
            if self.report_each_call:
                self.report_gauges()
            return
        self.launch(call, eager=_EAGER)

    def launch(self, call: Call[Any], *, eager: bool = False) -> None:
        """Create the call's task; ``eager``: its first step runs right here (3.12+)."""
        self.counters.in_flight += 1
        if self.report_each_call:
            self.report_gauges()
        self.active.add(call)
        if eager:
            # A call that needs no I/O finishes without another pass of the loop.
            call.task = asyncio.Task(  # type: ignore[call-arg,unused-ignore]
                self.execute(call), loop=self.loop, context=call.context, eager_start=True
            )
        else:
            call.task = self.loop.create_task(self.execute(call), context=call.context)

    async def execute(self, call: Call[Any]) -> None:
        """The call's task: await the awaitable, settle the call, free the slot."""
        counters = self.counters
        observer = self.observer
        began = 0.0 if observer is None else _clock()
        call.started = True
        if call.cancel_requested:  # cancelled before its first step
            counters.in_flight -= 1
            if self.report_each_call:
                self.report_gauges()
            self.active.discard(call)
            self.settle_unstarted(call)
            if self.waiting:  # its slot goes to the next waiting call, as at any end
                self.slot_freed()
            return
        outcome: Outcome = "completed"
        try:
            value = await call.awaitable
        except asyncio.CancelledError:
            counters.cancelled += 1
            outcome = "cancelled"
            if call.timed_out:
                counters.timed_out += 1
                outcome = "timed_out"
            call.cancelled(self.wake)
        except BaseException as exc:
            if call.cancel_sent and isinstance(exc, Exception):
                outcome = self._cancel_ignored(call, exc)
            else:
                # Even KeyboardInterrupt/SystemExit go to the caller: they must not
                # kill the loop that every other thread depends on.
                counters.failed += 1
                outcome = "failed"
                if call.spawned:
                    logger.error("aiobridge: spawned task %r failed", call.awaitable,
                                 exc_info=exc)
                call.fail(exc, self.wake)
        else:
            if call.cancel_sent:
                outcome = self._cancel_ignored(call, None)
            else:
                counters.completed += 1
                call.succeed(value, self.wake)
        finally:
            counters.in_flight -= 1
            if observer is not None:
                if self.report_each_call:
                    self.report_gauges()
                observer.finished(outcome, _clock() - began)
            self.active.discard(call)
            if call.timer is not None:
                call.timer.cancel()
            if self.waiting:
                self.slot_freed()

    def slot_freed(self) -> None:
        """A call ended (here, or a switched one, see :mod:`.switch`): launch the oldest waiting."""
        if self.waiting and not self.closed:
            # Never eager here: a chain of waiting calls that finish at once
            # would otherwise recurse once per call.
            self.launch(self.next_waiting())

    def active_tasks(self) -> set[asyncio.Task[Any]]:
        """The tasks of the calls running now."""
        return {call.task for call in self.active if call.task is not None}

    def next_waiting(self) -> Call[Any]:
        """Take the oldest call waiting for a slot."""
        call = self.waiting.popleft()
        if self.report_each_call:
            self.report_gauges()
        return call

    # -- cancelling ------------------------------------------------------------------------
    def cancel(self, call: Call[Any], timed_out: bool) -> None:
        """Cancel ``call`` wherever it is: running, waiting for a slot, or still in the inbox."""
        if call.settled:
            return
        call.timed_out = call.timed_out or timed_out
        if call.task is not None:
            self.cancel_task(call)
        elif call in self.waiting:
            self.waiting.remove(call)
            if self.report_each_call:
                self.report_gauges()
            self.settle_unstarted(call)
        else:
            call.cancel_requested = True  # still in the inbox: refused when drained

    def cancel_task(self, call: Call[Any]) -> None:
        """Cancel the task of a launched call, re-delivering a dropped cancellation."""
        # A task cancelled before its first step would never await the caller's
        # coroutine ("never awaited"); such a call is refused at its first step.
        if call.started:
            assert call.task is not None
            if self.redeliverer.cancel(
                call.task,
                on_redelivered=self._cancel_redelivered,
                on_give_up=functools.partial(call.cancelled, self.wake),
            ):
                call.cancel_sent = True
        else:
            call.cancel_requested = True

    def abandon(self, call: Call[Any]) -> None:
        """The caller of ``call`` was interrupted in its hand-off or wait: cancel it.

        The call may never have reached the inbox (interrupted before the
        append), so the inbox is drained first, even without its wake-up.
        """
        self.drain()
        if call.task is not None or call.settled or call in self.waiting:
            self.cancel(call, False)
        else:  # never reached the inbox: close it here, on the loop, and settle it
            close_awaitables((call.awaitable,), cancel_futures=False)
            call.cancelled(self.wake)

    def settle_unstarted(self, call: Call[Any]) -> None:
        """Settle a call whose awaitable never ran, closing it so it never warns."""
        self.counters.cancelled += 1
        if call.timed_out:
            self.counters.timed_out += 1
        if self.observer is not None:
            self.observer.finished("timed_out" if call.timed_out else "cancelled", None)
        if call.timer is not None:
            call.timer.cancel()
        close_awaitables((call.awaitable,), cancel_futures=False)
        call.cancelled(self.wake)

    def _cancel_ignored(self, call: Call[Any], error: Exception | None) -> Outcome:
        """The call's task went on after its cancellation: count, log, settle as cancelled."""
        counters = self.counters
        counters.cancel_ignored += 1
        if self.observer is not None:
            self.observer.cancel_ignored()
        counters.cancelled += 1
        self.redeliverer.ignored(call.awaitable, error)
        call.cancelled(self.wake)
        if call.timed_out:
            counters.timed_out += 1
            return "timed_out"
        return "cancelled"

    def _cancel_redelivered(self) -> None:
        self.counters.cancel_redelivered += 1
        if self.observer is not None:
            self.observer.cancel_redelivered()

    # -- gauges ----------------------------------------------------------------------------
    def report_gauges(self) -> None:
        """Tell the observer how the number of calls running and waiting changed.

        With the default loop this runs only before callers are woken, before the
        loop waits for I/O and at each probe beat, so a call that starts and ends
        while the loop is busy costs no gauge update; whoever a call wakes, and
        anyone looking while the loop is idle, sees the gauges up to date. With a
        ``loop_factory`` (no such hook) it runs after every change.
        """
        observer = self.observer
        if observer is None:
            return
        running = self.counters.in_flight
        if running != self._shown_in_flight:
            observer.in_flight(running - self._shown_in_flight)
            self._shown_in_flight = running
        waiting = len(self.waiting)
        if waiting != self._shown_queued:
            observer.queued(waiting - self._shown_queued)
            self._shown_queued = waiting
