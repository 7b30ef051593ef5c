"""Counters and loop-health measurements behind :meth:`AioThread.stats`.

Two instruments watch the loop:

* a **lag probe**: a callback the loop schedules for itself every
  ``interval`` seconds; how late it runs is the loop's lag (how long a ready
  callback waits before it gets the loop);
* a **watchdog thread** that notices when the probe has not run for longer than
  ``slow_callback_duration``, looks at the loop thread's current stack and, if
  the thread is inside a callback (not idle in its selector, merely starved of
  the GIL), logs where it is stuck. Each stall is counted once as a slow
  callback.

Counters are written only on the loop thread, so they need no lock; readers on
other threads see a consistent-enough snapshot.

An :class:`Observer` (e.g. :mod:`aiobridge.metrics`) may be told of every
change as it happens. It is attached when a loop thread starts, from the factory
set with :func:`set_observer_factory`; with none set, each event costs the loop
one ``is None`` test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import time
import traceback
import types
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ._threads import NativeLock, PlainThreads
    from .loop_thread import LoopThread

__all__ = ("BridgeStats", "Counters", "LoopMonitor", "Observer", "Outcome", "observer_for",
           "set_observer_factory")

logger = logging.getLogger("aiobridge")

_LAG_SAMPLES = 2048


@dataclasses.dataclass(frozen=True, slots=True)
class BridgeStats:
    """A snapshot of a bridge's counters and loop health.

    ``submitted == completed + failed + cancelled + in_flight`` holds at any
    quiet moment (``timed_out`` calls are also counted as ``cancelled``; the
    spawned tasks are counted in ``spawned`` and in the other counters too).

    ``cancel_ignored`` counts the calls that aiobridge cancelled (timeout,
    ``Future.cancel()``, an interrupted caller, ``stop()``) but whose coroutine
    went on and returned, or raised something else than ``CancelledError``: a
    library on its way dropped the cancellation (see ``docs/cancellation.md``).
    Their callers still got the timeout or the cancellation, and they are
    counted in ``cancelled`` too. ``cancel_redelivered`` counts the calls that
    dropped a cancellation and were cancelled again by aiobridge.

    Example:
        >>> from aiobridge import AioThread
        >>> with AioThread() as bridge:
        ...     stats = bridge.stats()
        >>> stats.in_flight, stats.loop_lag_p99 < 1.0
        (0, True)
    """

    submitted: int
    completed: int
    failed: int
    cancelled: int
    timed_out: int
    in_flight: int
    queued: int
    spawned: int
    loop_lag_p50: float
    loop_lag_p99: float
    loop_lag_max: float
    slow_callbacks: int
    cancel_ignored: int = 0
    cancel_redelivered: int = 0

    def as_dict(self) -> dict[str, float]:
        """The snapshot as a plain dict (for JSON endpoints)."""
        return dataclasses.asdict(self)


def _is_idle(frame: types.FrameType) -> bool:
    """True if the loop thread is between callbacks (in its selector or the C loop)."""
    code = frame.f_code
    if code.co_name == "select":
        return True
    # A loop written in C (uvloop) shows the frame that called run_forever() while it waits.
    return code.co_name in _LOOP_RUNNERS and code.co_filename.endswith("loop_thread.py")


def _cpu_clock(thread_ident: int) -> Callable[[], float]:
    """The CPU seconds used so far by thread ``thread_ident``; 0.0 where unknown."""
    get_clock = getattr(time, "pthread_getcpuclockid", None)
    try:
        clock = get_clock(thread_ident) if get_clock is not None else None
    except OSError:
        clock = None
    if clock is None:
        return lambda: 0.0

    def used() -> float:
        try:
            return time.clock_gettime(clock)
        except OSError:  # the thread has ended
            return 0.0

    return used


#: The functions of loop_thread.py that call ``loop.run_forever()``.
_LOOP_RUNNERS = frozenset({"_main", "_run_until_stopped"})


#: How a call ended. A timed-out call is reported as ``"timed_out"`` only (in
#: :class:`BridgeStats` it also counts as cancelled).
Outcome = Literal["completed", "failed", "cancelled", "timed_out"]


class Observer:
    """Told of a bridge's events as they happen; every method does nothing here.

    Subclass it to export figures elsewhere (:mod:`aiobridge.metrics` does).
    Methods run on the loop thread, except :meth:`slow_callback` (the
    watchdog's thread); they must be quick and must not raise.

    Example:
        >>> class Printer(Observer):
        ...     def finished(self, outcome, seconds):
        ...         print(outcome)
        >>> set_observer_factory(lambda loop_thread: Printer())  # doctest: +SKIP
    """

    def loop_started(self, after_fork: bool) -> None:
        """The loop thread started; ``after_fork``: it replaces the parent's in a forked child."""

    def in_flight(self, delta: int) -> None:
        """The number of calls running on the loop changed by ``delta``.

        With the default loop, changes are told in batches: before a caller is
        woken, before the loop waits for I/O and at each probe beat (so a call
        that starts and ends while the loop is busy may never show); with a
        ``loop_factory``, after every change.
        """

    def queued(self, delta: int) -> None:
        """The number of calls waiting for a slot (``max_in_flight``) changed by ``delta``.

        Told like :meth:`in_flight`.
        """

    def finished(self, outcome: Outcome, seconds: float | None) -> None:
        """A call ended; ``seconds`` it ran on the loop, or None if it never ran."""

    def lag(self, seconds: float) -> None:
        """One sample of the loop's lag (from the probe)."""

    def slow_callback(self) -> None:
        """A callback held the loop longer than ``slow_callback_duration``."""

    def cancel_ignored(self) -> None:
        """A call went on after aiobridge cancelled it (``BridgeStats.cancel_ignored``)."""

    def cancel_redelivered(self) -> None:
        """A dropped cancellation was delivered again (``BridgeStats.cancel_redelivered``)."""


ObserverFactory = Callable[["LoopThread"], Observer | None]
_observer_factory: ObserverFactory | None = None


def set_observer_factory(factory: ObserverFactory | None) -> None:
    """Make an :class:`Observer` for every loop thread that starts from now on (None: stop).

    Example:
        >>> set_observer_factory(None)
    """
    global _observer_factory
    _observer_factory = factory


def observer_for(loop_thread: LoopThread) -> Observer | None:
    """The observer of a loop thread about to start, if a factory is set.

    A factory that fails is logged and the bridge runs unobserved: metrics
    must never stop the calls they count.
    """
    factory = _observer_factory
    if factory is None:
        return None
    try:
        return factory(loop_thread)
    except Exception:
        logger.exception("aiobridge: the observer factory failed; bridge %r runs unobserved",
                         loop_thread.name)
        return None


class Counters:
    """Call counters, mutated only on the loop thread."""

    __slots__ = ("cancel_ignored", "cancel_redelivered", "cancelled", "completed", "failed",
                 "in_flight", "spawned", "submitted", "timed_out")

    def __init__(self) -> None:
        self.submitted = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.timed_out = 0
        self.in_flight = 0
        self.spawned = 0
        self.cancel_ignored = 0
        self.cancel_redelivered = 0


class LoopMonitor:
    """Lag probe and stall watchdog for one loop.

    Args:
        slow_callback_duration: a callback holding the loop longer than this
            (seconds) is counted and logged as slow.
    """

    def __init__(self, slow_callback_duration: float) -> None:
        self.slow_callback_duration = slow_callback_duration
        self.interval = max(0.005, min(0.25, slow_callback_duration / 2))
        self.slow_callbacks = 0
        self.lag_max = 0.0
        self.observer: Observer | None = None
        #: Called on the loop thread at each beat, before the observer hears of the lag.
        self.on_beat: Callable[[], None] | None = None
        self._lags: deque[float] = deque(maxlen=_LAG_SAMPLES)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._expected = 0.0
        self._last_beat = time.monotonic()
        self._reported_beat = -1.0
        self._loop_thread_id = 0
        # Released by stop() and by the watchdog as it ends: plain OS-thread locks
        # (also under gevent), as both sides are real threads.
        self._stop: NativeLock | None = None
        self._watchdog_done: NativeLock | None = None

    # -- probe (loop thread) -------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop, name: str, threads: PlainThreads) -> None:
        """Start probing ``loop``; call on the loop thread."""
        self._loop = loop
        self._loop_thread_id = threads.os_thread_ident()
        self._last_beat = time.monotonic()
        self._schedule()
        stop = self._stop = threads.native_lock()
        stop.acquire()
        done = self._watchdog_done = threads.native_lock()
        done.acquire()
        threads.start_thread(lambda: self._watch(stop, done), f"{name}-watchdog")

    def _schedule(self) -> None:
        assert self._loop is not None
        self._expected = self._loop.time() + self.interval
        self._handle = self._loop.call_at(self._expected, self._beat)

    def _beat(self) -> None:
        assert self._loop is not None
        lag = max(0.0, self._loop.time() - self._expected)
        self._lags.append(lag)
        if lag > self.lag_max:
            self.lag_max = lag
        if self.on_beat is not None:
            self.on_beat()
        if self.observer is not None:
            self.observer.lag(lag)
        self._last_beat = time.monotonic()
        self._schedule()

    def stop(self) -> None:
        """Stop probing; call on the loop thread (or after it ended)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        stop, self._stop = self._stop, None
        if stop is not None:
            stop.release()
            assert self._watchdog_done is not None
            self._watchdog_done.acquire(True, 1.0)

    # -- watchdog (its own thread) ---------------------------------------------
    def _watch(self, stop: NativeLock, done: NativeLock) -> None:
        try:
            self._watch_until(stop)
        finally:
            done.release()

    def _watch_until(self, stop: NativeLock) -> None:
        period = max(0.005, self.slow_callback_duration / 2)
        loop_cpu = _cpu_clock(self._loop_thread_id)
        woke = time.monotonic()
        held_up = 0.0  # how long this thread could not run since the beat it watches
        watched, cpu_then = self._last_beat, loop_cpu()
        while not stop.acquire(True, period):
            now = time.monotonic()
            late, woke = now - woke - period, now
            beat = self._last_beat
            if beat != watched:
                watched, held_up, cpu_then = beat, 0.0, loop_cpu()
            held_up += max(0.0, late)
            stalled = now - beat - self.interval
            # A stall this thread sat through too belongs to the whole process: the
            # GIL held by C code in another thread (a garbage collection, the
            # interpreter exiting) or the process suspended; the lag probe shows it.
            # It is the loop's own if the loop thread spent it on the CPU.
            own = max(stalled - held_up, loop_cpu() - cpu_then)
            if own <= self.slow_callback_duration or self._reported_beat == beat:
                continue
            frame = sys._current_frames().get(self._loop_thread_id)
            if frame is None or _is_idle(frame):
                # The loop is waiting for I/O or for the GIL, not running a
                # callback: the process is busy elsewhere; the lag probe shows it.
                continue
            self._reported_beat = beat
            self.slow_callbacks += 1
            if self.observer is not None:
                self.observer.slow_callback()
            logger.warning(
                "aiobridge loop blocked for more than %.3f s; it is stuck at:\n%s"
                "Blocking code in a coroutine stalls every caller of the bridge; "
                "move it to a thread (await asyncio.to_thread(...)).",
                stalled, "".join(traceback.format_list(traceback.extract_stack(frame)[-6:])),
            )

    # -- readers ----------------------------------------------------------------
    def lag_percentiles(self) -> tuple[float, float]:
        """(p50, p99) of the recent lag samples, in seconds."""
        samples = sorted(self._lags)
        if not samples:
            return 0.0, 0.0
        last = len(samples) - 1
        return samples[int(last * 0.50)], samples[int(last * 0.99)]
