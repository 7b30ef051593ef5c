"""What the world is told of a bridge: the stats snapshot and the observer of its events.

An :class:`Observer` (e.g. :mod:`aiobridge.metrics`) may be told of every
change as it happens. It is attached when a loop thread starts, from the
factory set with :func:`set_observer_factory`; with none set, each event costs
the loop one ``is None`` test.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Literal

__all__ = ("BridgeStats", "Observer", "ObserverFactory", "Outcome", "observer_factory",
           "observer_for", "set_observer_factory")

logger = logging.getLogger("aiobridge")


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


#: How a call ended on the loop. A timed-out call is reported as ``"timed_out"``
#: only (in :class:`BridgeStats` it also counts as cancelled); a call that
#: finished in the instant after its caller's deadline passed (the caller got
#: the timeout, the cancellation came too late) is ``"completed"``.
Outcome = Literal["completed", "failed", "cancelled", "timed_out"]


class Observer:
    """Told of a bridge's events as they happen; every method does nothing here.

    Subclass it to export figures elsewhere (:mod:`aiobridge.metrics` does).
    Methods run on the loop thread, except :meth:`slow_callback` and
    :meth:`loop_blocked` (the watchdog's thread); they must be quick and must not raise.

    Example:
        >>> class Printer(Observer):
        ...     def finished(self, outcome, seconds):
        ...         print(outcome)
        >>> set_observer_factory(lambda bridge: Printer())  # doctest: +SKIP
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

    def loop_blocked(self, route: str) -> None:
        """A view served on the loop (``aiobridge.onloop``) held it too long; ``route``
        names it (``"GET /report"``). Told from the watchdog's thread, after
        :meth:`slow_callback`."""

    def cancel_ignored(self) -> None:
        """A call went on after aiobridge cancelled it (``BridgeStats.cancel_ignored``)."""

    def cancel_redelivered(self) -> None:
        """A dropped cancellation was delivered again (``BridgeStats.cancel_redelivered``)."""


#: Makes the observer of a bridge about to start, from what it is told of the bridge
#: (an object with the bridge's ``name``); None: that bridge runs unobserved.
ObserverFactory = Callable[[Any], "Observer | None"]
# The one global of observation: aiobridge.metrics reads it to know whether it is installed.
_observer_factory: ObserverFactory | None = None


def set_observer_factory(factory: ObserverFactory | None) -> None:
    """Make an :class:`Observer` for every loop thread that starts from now on (None: stop).

    Example:
        >>> set_observer_factory(None)
    """
    global _observer_factory
    _observer_factory = factory


def observer_factory() -> ObserverFactory | None:
    """The factory set with :func:`set_observer_factory`, if any."""
    return _observer_factory


def observer_for(bridge: Any) -> Observer | None:
    """The observer of a loop thread about to start, if a factory is set.

    A factory that fails is logged and the bridge runs unobserved: metrics
    must never stop the calls they count.
    """
    factory = _observer_factory
    if factory is None:
        return None
    try:
        return factory(bridge)
    except Exception:
        logger.exception("aiobridge: the observer factory failed; bridge %r runs unobserved",
                         bridge.name)
        return None
