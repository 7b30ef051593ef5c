"""The loop's health: call counters, the lag probe and the stall watchdog.

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
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import traceback
import types
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .switch import label_of_running

if TYPE_CHECKING:
    from .._backends.threads import NativeLock, OsThreads
    from .observers import Observer

__all__ = ("Counters", "LoopMonitor")

logger = logging.getLogger("aiobridge")

_LAG_SAMPLES = 2048


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
        self._idle_codes: frozenset[types.CodeType] = frozenset()
        # Released by stop() and by the watchdog as it ends: plain OS-thread locks
        # (also under gevent), as both sides are real threads.
        self._stop: NativeLock | None = None
        self._watchdog_done: NativeLock | None = None

    # -- probe (loop thread) -------------------------------------------------
    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        name: str,
        threads: OsThreads,
        idle_codes: frozenset[types.CodeType],
    ) -> None:
        """Start probing ``loop``; call on the loop thread.

        Args:
            loop: the loop to probe.
            name: the loop thread's name (the watchdog is ``{name}-watchdog``).
            threads: where the watchdog thread and its locks come from.
            idle_codes: the code of the functions that wait in ``run_forever()``
                while the loop is idle: a loop written in C (uvloop) shows
                their frame, not a selector's, while it waits for I/O.
        """
        self._loop = loop
        self._idle_codes = idle_codes
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
            if frame is None or self.is_idle(frame):
                # The loop is waiting for I/O or for the GIL, not running a
                # callback: the process is busy elsewhere; the lag probe shows it.
                continue
            self._reported_beat = beat
            self.slow_callbacks += 1
            # A request greenlet on an adopted loop (aiobridge.onloop): name its route.
            route = label_of_running(self._loop_thread_id)
            if self.observer is not None:
                self.observer.slow_callback()
                if route is not None:
                    self.observer.loop_blocked(route)
            stack = "".join(traceback.format_list(traceback.extract_stack(frame)[-8:]))
            if route is None:
                logger.warning(
                    "aiobridge loop blocked for more than %.3f s; it is stuck at:\n%s"
                    "Blocking code in a coroutine stalls every caller of the bridge; "
                    "move it to a thread (await asyncio.to_thread(...)).",
                    stalled, stack,
                )
                continue
            logger.warning(
                "aiobridge loop blocked for more than %.3f s by the view of %s; it is stuck "
                "at:\n%sA view that blocks stalls every request served on this loop: send it "
                "to a thread (@aiobridge.flask.threaded, AIOBRIDGE_THREADED_VIEWS, or "
                "aiobridge.onloop.run_in_thread(...) for one call).",
                stalled, route, stack,
                extra={"aiobridge_route": route, "aiobridge_stack": stack},
            )

    def is_idle(self, frame: types.FrameType) -> bool:
        """True if the loop thread, whose innermost frame is ``frame``, is between callbacks.

        It is waiting for I/O: in a selector's ``select()`` (a Python loop), or,
        for a loop written in C, in one of the functions its thread registered
        (``idle_codes``) that called ``run_forever()``.
        """
        code = frame.f_code
        return code.co_name == "select" or code in self._idle_codes

    # -- readers ----------------------------------------------------------------
    def lag_percentiles(self) -> tuple[float, float]:
        """(p50, p99) of the recent lag samples, in seconds."""
        samples = sorted(self._lags)
        if not samples:
            return 0.0, 0.0
        last = len(samples) - 1
        return samples[int(last * 0.50)], samples[int(last * 0.99)]
