"""The loop thread: one named daemon thread running one event loop.

:class:`LoopThread` owns the thread, the loop, the inbox through which calls
arrive, the bookkeeping of running calls (backpressure, counters) and the
shutdown sequence. :class:`~aiobridge.AioThread` is the public face over it.

States::

    NEW ──start()──▶ RUNNING ──stop()──▶ STOPPING ──▶ STOPPED
     ▲                  │
     └──── os.fork() ───┘   (in the child: the parent's loop thread does not exist)

Hand-off: a caller appends its call to ``inbox`` (a deque: append and popleft
are atomic) and rings the loop's doorbell (an eventfd, see ``_doorbell``; else
``call_soon_threadsafe``) only if no wake-up is already pending, so a burst of
calls from many threads costs the loop one wake-up. The loop thread creates
every task itself: asyncio tasks are not thread-safe.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import enum
import errno
import functools
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from . import _doorbell, _fork
from ._calls import Call, Waker, wake_now
from ._cancelling import DroppedCancellations
from ._hosts import check_host
from ._redeliver import Redeliverer
from ._selector import WakingSelector, waking_selector
from ._sweep import cancel_remaining
from ._threads import NativeLock, PlainThreads, for_this_process
from .errors import BridgeClosedError, BridgeError
from .monitor import Counters, LoopMonitor, Observer, Outcome, observer_for

__all__ = ("LoopThread", "State", "stop_all")

logger = logging.getLogger("aiobridge")

_START_TIMEOUT = 10.0
# After the drain period, cancelled tasks get this long to run their cleanup.
_CANCEL_GRACE = 2.0
_CLOSER_TIMEOUT = 5.0
_EAGER = sys.version_info >= (3, 12)
_clock = time.perf_counter
# Captured at import, as in bridge.py, so that the deadlock guard compares idents
# made by the same function even if gevent patches ``threading`` in between.
_get_ident = threading.get_ident

Closer = Callable[[], Awaitable[None]]


class State(enum.Enum):
    """Lifecycle of a loop thread."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class LoopThread:
    """A daemon thread running an asyncio loop that executes submitted calls.

    Args:
        name: thread name (shown in stack dumps and ``ps -T``).
        loop_factory: makes the loop, e.g. ``uvloop.new_event_loop``.
        debug: asyncio debug mode.
        slow_callback_duration: threshold of the slow-callback detector (seconds).
        max_in_flight: at most this many calls run at once; the rest wait in order.
    """

    def __init__(
        self,
        name: str,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
        debug: bool,
        slow_callback_duration: float,
        max_in_flight: int | None,
    ) -> None:
        self.name = name
        self._loop_factory = loop_factory
        self._debug = debug
        self._slow_callback_duration = slow_callback_duration
        self._max_in_flight = max_in_flight
        # Fork hooks run in a forked child, before anything else touches this object.
        self.fork_hooks: list[Callable[[], None]] = []
        self._init_state()
        _ALL.add(self)

    def _init_state(self, state: State = State.NEW, *, restarted_after_fork: bool = False) -> None:
        self.state = state
        self.loop: asyncio.AbstractEventLoop | None = None
        self.redeliverer: Redeliverer | None = None
        self.thread: threading.Thread | None = None
        self.thread_ident = 0
        self.inbox: deque[Call[Any]] = deque()
        self.counters = Counters()
        self.dropped_cancellations = DroppedCancellations()
        self.monitor = LoopMonitor(self._slow_callback_duration)
        self.observer: Observer | None = None
        # The gauges the observer was last told (see _report_gauges).
        self._shown_in_flight = 0
        self._shown_queued = 0
        # An observer without the selector's hook (a loop_factory loop): told per change.
        self._report_each_call = False
        self.restarted_after_fork = restarted_after_fork
        self._transition = threading.Lock()
        self._wake_pending = False
        # Kept for the thread's whole life (see _doorbell: a late ring must find it open).
        self._doorbell: _doorbell.Doorbell | None = None
        self._active: set[Call[Any]] = set()
        self._waiting: deque[Call[Any]] = deque()
        self._closers: list[Closer] = []
        self._startup_error: BaseException | None = None
        self._loop_stopped = False  # set by the shutdown sequence right before loop.stop()
        self._wake: Waker = wake_now
        self._threads: PlainThreads = PlainThreads()
        self.new_lock = self._threads.caller_lock
        self.future_call = self._threads.future_call
        self.hold_hub = self._threads.hold_hub
        # Last: a thread that sees this process's pid sees the whole fresh state.
        self.pid = os.getpid()

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        """Start the thread; return once its loop accepts work. Idempotent."""
        if self.pid != os.getpid():
            self._after_fork_in_child()
        with self._transition:
            if self.state is State.RUNNING:
                return
            if self.state is not State.NEW:
                raise BridgeClosedError(
                    f"bridge {self.name!r} is {self.state.value}; a stopped bridge cannot be "
                    "restarted, create a new AioThread"
                )
            check_host(self.name)
            self.observer = self.monitor.observer = observer_for(self)
            # Chosen now, not at import: gevent may have patched the process since.
            threads = self._threads = for_this_process()
            self.new_lock = threads.caller_lock
            self.future_call = threads.future_call
            self.hold_hub = threads.hold_hub
            # A lock of the OS thread, even under gevent: this short wait must not
            # let another greenlet run while ``_transition`` is held.
            ready = threads.native_lock()
            ready.acquire()
            thread = threads.start_thread(lambda: self._main(ready, threads), self.name)
            if not ready.acquire(True, _START_TIMEOUT):
                raise BridgeError(f"loop thread {self.name!r} did not start within "
                                  f"{_START_TIMEOUT} s")
            if self._startup_error is not None:
                self.state = State.STOPPED
                raise BridgeError(
                    f"bridge {self.name!r} could not create its event loop: "
                    f"{self._startup_error!r}"
                ) from self._startup_error
            self.thread = thread

    def _main(self, ready: NativeLock, threads: PlainThreads) -> None:
        selector: WakingSelector | None = None
        try:
            if self._loop_factory is None:
                selector = waking_selector(threads.selector_class())
                loop: asyncio.AbstractEventLoop = threads.new_loop(selector)
                self._wake = selector.pending.append
            else:
                loop = self._loop_factory()
            threads.prepare(loop, self.name)
            asyncio.set_event_loop(loop)
            loop.set_debug(self._debug)
            loop.slow_callback_duration = self._slow_callback_duration
        except BaseException as exc:
            if selector is not None:
                selector.close()
            self._startup_error = exc
            ready.release()
            return
        try:
            self._doorbell = _doorbell.install(loop, self._drain_inbox)
        except BaseException as exc:
            self._startup_error = exc
            ready.release()
            loop.close()
            return
        self.loop = loop
        if self.observer is not None:
            if selector is not None:
                # Gauges told when the loop next waits, not on every call (see _report_gauges).
                selector.before_wait = self.monitor.on_beat = self._report_gauges
            else:
                self._report_each_call = True
        self.redeliverer = Redeliverer(loop)
        self.thread_ident = _get_ident()
        self.pid = os.getpid()
        self.monitor.start(loop, self.name, threads)
        self.state = State.RUNNING
        if self.observer is not None:
            self.observer.loop_started(self.restarted_after_fork)
        ready.release()
        try:
            self._run_until_stopped(loop)
        except OSError as exc:
            if exc.errno != errno.EBADF:
                logger.critical("aiobridge loop thread %r crashed", self.name, exc_info=exc)
            else:
                # Not a crash: something closed the loop's descriptor under it, as
                # uWSGI does to every descriptor before it re-executes itself (reload).
                logger.warning(
                    "aiobridge loop thread %r stopped: the descriptor of its event loop was "
                    "closed by another part of the process (e.g. a server reloading); calls "
                    "in flight were abandoned",
                    self.name,
                )
        except BaseException as exc:
            logger.critical("aiobridge loop thread %r crashed", self.name, exc_info=exc)
        finally:
            self.state = State.STOPPED
            self._wake = wake_now
            if selector is not None:
                self._report_gauges()
                selector.flush()
            self.monitor.stop()
            if self._doorbell is not None:
                self._doorbell.detach()
            self._abandon_everything(loop)
            asyncio.set_event_loop(None)
            with contextlib.suppress(OSError):  # a descriptor already closed under the loop
                loop.close()

    def _run_until_stopped(self, loop: asyncio.AbstractEventLoop) -> None:
        """``loop.run_forever()``, resumed after a user's SystemExit or KeyboardInterrupt.

        asyncio re-raises those two out of ``run_forever()`` when a task's step
        or a callback raises them. A task has stored the exception first (its
        awaiters get it), so the loop that every other thread depends on carries
        on; only the shutdown sequence stops it.
        """
        while True:
            try:
                loop.run_forever()
            except (SystemExit, KeyboardInterrupt) as exc:
                if self._loop_stopped:
                    return
                logger.debug("aiobridge: %r raised on the loop; delivered to its awaiters",
                             exc, exc_info=exc)
                continue
            if self._loop_stopped:
                return

    def stop(self, timeout: float) -> None:
        """Drain for up to ``timeout`` seconds, cancel the rest, close, join."""
        if self.pid != os.getpid():
            self._after_fork_in_child()
        with self._transition:
            if self.state is State.NEW:
                self.state = State.STOPPED
                return
            if self.state is State.RUNNING:
                self.state = State.STOPPING
                assert self.loop is not None
                self.loop.call_soon_threadsafe(self._begin_shutdown, timeout)
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            # The drain and the cleanup are bounded on the loop side; the margin covers them.
            thread.join(timeout + _CANCEL_GRACE + _CLOSER_TIMEOUT + 5.0)
            if thread.is_alive():
                logger.error("aiobridge loop thread %r did not stop in time", self.name)

    def add_closer(self, closer: Closer) -> None:
        """Register an async cleanup step run at stop, last registered first."""
        self._closers.append(closer)

    def remove_closer(self, closer: Closer) -> None:
        """Forget a cleanup step registered with :meth:`add_closer`."""
        with contextlib.suppress(ValueError):
            self._closers.remove(closer)

    # -- hand-off (any thread) -------------------------------------------------
    def hand_off(self, call: Call[Any]) -> None:
        """Queue ``call`` for the loop; raise BridgeClosedError if refused."""
        self.inbox.append(call)
        # Accepted only if the loop still runs after the append: stop() flips the
        # state before it drains the inbox, so nothing can slip in between.
        if self.state is not State.RUNNING:
            self._refuse(call)
        if not self._wake_pending:
            self._wake_pending = True
            doorbell = self._doorbell
            try:
                if doorbell is not None:
                    doorbell.ring()
                else:
                    loop = self.loop
                    assert loop is not None
                    loop.call_soon_threadsafe(self._drain_inbox)
            except (RuntimeError, OSError):  # the loop closed, or its descriptor, under us
                self._refuse(call)

    def _refuse(self, call: Call[Any]) -> None:
        try:
            self.inbox.remove(call)
        except ValueError:
            return  # the loop already took it and will settle it
        raise BridgeClosedError(
            f"bridge {self.name!r} is {self.state.value} and accepts no new work"
        )

    def call_soon_threadsafe(
        self, callback: Callable[..., object], *args: Any,
        context: contextvars.Context | None = None,
    ) -> None:
        """``loop.call_soon_threadsafe``, run after every call handed off before it.

        Hand-offs wake the loop through the doorbell, other callbacks through the
        loop's own queue, so a callback could overtake a call its thread handed
        off just before (a ``call_soon`` or a cancel right after a ``submit``);
        the callback first takes in the inbox, as ``call_soon_threadsafe`` alone
        used to. Raises ``RuntimeError`` if the loop is closed or gone.
        """
        loop = self.loop
        if loop is None:
            raise RuntimeError("the loop thread has no loop")
        loop.call_soon_threadsafe(self._in_order, callback, args, context=context)

    def _in_order(self, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self._drain_inbox()
        callback(*args)

    def request_cancel(self, call: Call[Any], *, timed_out: bool = False) -> None:
        """Ask the loop to cancel ``call`` (from any thread); never blocks."""
        if self.loop is None or call.settled:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed: nothing to cancel
            self.call_soon_threadsafe(self._cancel, call, timed_out)

    def abandon(self, call: Call[Any]) -> None:
        """The caller of ``call`` was interrupted during its hand-off or its wait.

        From any thread; never blocks. The call may be anywhere: never handed
        off, in the inbox (with its wake-up possibly lost), waiting for a slot
        or running, so the decision is taken on the loop thread.
        """
        loop = self.loop
        try:
            if loop is None:
                raise RuntimeError("no loop")
            loop.call_soon_threadsafe(self._abandon, call)
        except RuntimeError:  # the loop is closed: nothing will run the call any more
            _close_awaitable(call.awaitable)

    # -- loop side ---------------------------------------------------------------
    def _abandon(self, call: Call[Any]) -> None:
        self._drain_inbox()  # take in what was handed off, even without its wake-up
        if call.task is not None or call.settled or call in self._waiting:
            self._cancel(call, False)
        else:  # never reached the inbox: close it here, on the loop, and settle it
            _close_awaitable(call.awaitable)
            call.cancelled(self._wake)

    def _drain_inbox(self) -> None:
        self._wake_pending = False
        inbox = self.inbox
        while inbox:
            self._accept(inbox.popleft())

    def _accept(self, call: Call[Any]) -> None:
        counters = self.counters
        counters.submitted += 1
        if call.spawned:
            counters.spawned += 1
        if call.cancel_requested:
            self._settle_unstarted(call)
            return
        if call.timeout is not None:
            assert self.loop is not None
            call.timer = self.loop.call_later(call.timeout, self._cancel, call, True)
        limit = self._max_in_flight
        if limit is not None and not call.spawned and counters.in_flight >= limit:
            self._waiting.append(call)
            if self._report_each_call:
                self._report_gauges()
            return
        self._launch(call, eager=_EAGER)

    def _launch(self, call: Call[Any], *, eager: bool = False) -> None:
        self.counters.in_flight += 1
        if self._report_each_call:
            self._report_gauges()
        self._active.add(call)
        loop = self.loop
        assert loop is not None
        if eager:
            # The first step runs right here; a call that needs no I/O finishes
            # without another pass of the loop.
            call.task = asyncio.Task(  # type: ignore[call-arg,unused-ignore]
                self._execute(call), loop=loop, context=call.context, eager_start=True
            )
        else:
            call.task = loop.create_task(self._execute(call), context=call.context)

    async def _execute(self, call: Call[Any]) -> None:
        counters = self.counters
        observer = self.observer
        began = 0.0 if observer is None else _clock()
        call.started = True
        if call.cancel_requested:  # cancelled before its first step
            counters.in_flight -= 1
            if self._report_each_call:
                self._report_gauges()
            self._active.discard(call)
            self._settle_unstarted(call)
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
            call.cancelled(self._wake)
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
                call.fail(exc, self._wake)
        else:
            if call.cancel_sent:
                outcome = self._cancel_ignored(call, None)
            else:
                counters.completed += 1
                call.succeed(value, self._wake)
        finally:
            counters.in_flight -= 1
            if observer is not None:
                if self._report_each_call:
                    self._report_gauges()
                observer.finished(outcome, _clock() - began)
            self._active.discard(call)
            if call.timer is not None:
                call.timer.cancel()
            if self._waiting and self.state is not State.STOPPED:
                # Never eager here: a chain of waiting calls that finish at once
                # would otherwise recurse once per call.
                self._launch(self._next_waiting())

    def _cancel_ignored(self, call: Call[Any], error: Exception | None) -> Outcome:
        """The call's task went on after its cancellation: count, log, settle as cancelled."""
        counters = self.counters
        counters.cancel_ignored += 1
        if self.observer is not None:
            self.observer.cancel_ignored()
        counters.cancelled += 1
        self.dropped_cancellations.ignored(call.awaitable, error)
        call.cancelled(self._wake)
        if call.timed_out:
            counters.timed_out += 1
            return "timed_out"
        return "cancelled"

    def _cancel(self, call: Call[Any], timed_out: bool) -> None:
        if call.settled:
            return
        call.timed_out = call.timed_out or timed_out
        if call.task is not None:
            self._cancel_task(call)
        elif call in self._waiting:
            self._waiting.remove(call)
            if self._report_each_call:
                self._report_gauges()
            self._settle_unstarted(call)
        else:
            call.cancel_requested = True  # still in the inbox: refused when drained

    def _cancel_task(self, call: Call[Any]) -> None:
        # A task cancelled before its first step would never await the caller's
        # coroutine ("never awaited"); such a call is refused at its first step.
        if call.started:
            assert call.task is not None
            assert self.redeliverer is not None
            if self.redeliverer.cancel(
                call.task,
                on_redelivered=functools.partial(self._cancel_redelivered, call),
                on_give_up=functools.partial(call.cancelled, self._wake),
            ):
                call.cancel_sent = True
        else:
            call.cancel_requested = True

    def _cancel_redelivered(self, call: Call[Any]) -> None:
        self.counters.cancel_redelivered += 1
        if self.observer is not None:
            self.observer.cancel_redelivered()

    def _next_waiting(self) -> Call[Any]:
        call = self._waiting.popleft()
        if self._report_each_call:
            self._report_gauges()
        return call

    def _report_gauges(self) -> None:
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
        waiting = len(self._waiting)
        if waiting != self._shown_queued:
            observer.queued(waiting - self._shown_queued)
            self._shown_queued = waiting

    def _settle_unstarted(self, call: Call[Any]) -> None:
        """Settle a call whose awaitable never ran, closing it so it never warns."""
        self.counters.cancelled += 1
        if call.timed_out:
            self.counters.timed_out += 1
        if self.observer is not None:
            self.observer.finished("timed_out" if call.timed_out else "cancelled", None)
        if call.timer is not None:
            call.timer.cancel()
        _close_awaitable(call.awaitable)
        call.cancelled(self._wake)

    # -- shutdown (loop side) ----------------------------------------------------
    def _begin_shutdown(self, timeout: float) -> None:
        assert self.loop is not None
        self.loop.create_task(self._shutdown(timeout), name=f"{self.name}-shutdown")

    async def _shutdown(self, drain_seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_seconds
        # 1. Drain: calls accepted before stop() and spawned tasks may finish.
        while True:
            self._drain_inbox()
            tasks = {c.task for c in self._active if c.task is not None}
            remaining = deadline - loop.time()
            if not tasks or remaining <= 0:
                break
            await asyncio.wait(tasks, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        # 2. Cancel the calls left (their callers get CancelledError)...
        while self._waiting:
            self._settle_unstarted(self._next_waiting())
        tasks = {c.task for c in self._active if c.task is not None}
        for call in list(self._active):
            self._cancel_task(call)
        # ... and every other task on the loop, as asyncio.run does (bounded).
        assert self.redeliverer is not None
        await cancel_remaining(tasks, _CANCEL_GRACE, self.name, cancel=self.redeliverer.cancel)
        # 3. Close what the bridge owns (queues, resources), newest first.
        while self._closers:
            closer = self._closers.pop()
            try:
                await asyncio.wait_for(closer(), _CLOSER_TIMEOUT)
            except Exception:
                logger.exception("aiobridge: error while closing %r", closer)
        # 4. What asyncio itself holds.
        await loop.shutdown_asyncgens()
        with contextlib.suppress(Exception):
            await self._threads.shutdown_executor(loop)
        self._loop_stopped = True
        loop.stop()

    def _abandon_everything(self, loop: asyncio.AbstractEventLoop) -> None:
        """Settle every call still pending when the loop stops, so no caller hangs."""
        while self.inbox:
            call = self.inbox.popleft()
            _close_awaitable(call.awaitable)
            call.fail(_closed(self.name, "before running the call"), wake_now)
        while self._waiting:
            call = self._next_waiting()
            _close_awaitable(call.awaitable)
            call.fail(_closed(self.name, "before running the call"), wake_now)
        leftovers = [c for c in self._active if c.task is not None and not c.task.done()]
        for call in leftovers:
            call.fail(_closed(self.name, "while the call ran"), wake_now)
        if leftovers and not loop.is_running():
            # Only after a crash: give the stranded tasks a chance to run their cleanup.
            tasks = [c.task for c in leftovers if c.task is not None]
            for call in leftovers:
                self._cancel_task(call)
            # A plain future, not a task: if the loop cannot run any more, nothing
            # is left behind that warns about never having run.
            settled = asyncio.gather(*tasks, return_exceptions=True)
            give_up = loop.call_later(_CANCEL_GRACE, settled.cancel)
            with contextlib.suppress(BaseException):
                loop.run_until_complete(settled)
            give_up.cancel()

    # -- fork --------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        """Forget the parent's loop thread; the next call starts a fresh one.

        Runs once per process, however many threads race their first call
        (servers that fork without Python's at-fork hooks, such as uWSGI, get
        here lazily). Everything of the parent's loop is kept, untouched, for
        the life of the child: see :mod:`aiobridge._fork`.
        """
        with _fork.process_lock("aiobridge-fork-reset"):
            if self.pid == os.getpid():
                return  # another thread of this process did it
            inherited = dict(vars(self))
            state = self.state
            if isinstance(self.loop, asyncio.AbstractEventLoop):
                _fork.detach_loop(self.loop)
            _fork.keep(inherited)
            live = state in (State.RUNNING, State.STOPPING)
            self._init_state(State.NEW if live else state, restarted_after_fork=live)
            for hook in self.fork_hooks:
                hook()


def _closed(name: str, when: str) -> BridgeClosedError:
    return BridgeClosedError(f"bridge {name!r} stopped {when}")


def _close_awaitable(awaitable: Awaitable[Any]) -> None:
    close = getattr(awaitable, "close", None)
    if asyncio.iscoroutine(awaitable) and close is not None:
        close()


_ALL: weakref.WeakSet[LoopThread] = weakref.WeakSet()


def _reset_all_after_fork() -> None:
    for loop_thread in list(_ALL):
        loop_thread._after_fork_in_child()


def stop_all(timeout: float) -> int:
    """Stop every loop thread running in this process; return how many were running.

    Inherited ones (a fork without Python's fork hooks, as uWSGI makes them)
    are only let go of: they belong to the parent.
    """
    stopped = 0
    for loop_thread in list(_ALL):
        if loop_thread.pid != os.getpid():
            loop_thread._after_fork_in_child()
        elif loop_thread.state is State.RUNNING:
            loop_thread.stop(timeout)
            stopped += 1
    return stopped


def _stop_all_at_exit() -> None:
    # atexit runs after non-daemon threads are joined but before daemon threads
    # are frozen: the last moment at which a loop can still close cleanly.
    stop_all(_EXIT_TIMEOUT)


_EXIT_TIMEOUT = 2.0

os.register_at_fork(after_in_child=_reset_all_after_fork)
atexit.register(_stop_all_at_exit)
